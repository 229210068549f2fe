//! The built-in steps, compiled to components at build time and embedded in the binary.

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, _)| *n)
}
