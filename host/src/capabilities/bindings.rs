//! Host bindings for the `wharf:step` WIT package. A call that fails with a `step-error`
//! returns [`CallError`](super::CallError): the error travels back to the step as a value,
//! while a trap (a divergent replay, a limit hit) stops it.

wasmtime::component::bindgen!({
    world: "typed-step",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    trappable_error_type: {
        "wharf:step/types.step-error" => super::CallError,
    },
    with: {
        "wharf:step/secrets.secret": super::secrets::SecretHandle,
    },
});
