//! A component that is no step: it exports `acme:plugin/hook`.

wit_bindgen::generate!({
    inline: "
        package acme:plugin;
        interface hook { on-event: func(name: string) -> bool; }
        world plugin { export hook; }
    ",
    world: "plugin",
});

struct Plugin;

impl exports::acme::plugin::hook::Guest for Plugin {
    fn on_event(name: String) -> bool {
        !name.is_empty()
    }
}

export!(Plugin);
