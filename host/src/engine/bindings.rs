//! Host bindings for the `wharf:step` WIT package.

wasmtime::component::bindgen!({
    world: "typed-step",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
    with: {
        "wharf:step/secrets.secret": crate::capabilities::secrets::SecretHandle,
    },
});
