//! A step's clock calls, written compactly. A step that reads the clock in a loop makes
//! thousands of calls whose arguments are empty and whose results differ by microseconds;
//! written as one [`crate::Entry::Call`] each, they cost some 160 bytes apiece. A run of them
//! goes into one [`crate::Entry::Clocks`] instead, one short value per call:
//!
//! | call                                   | value                                            |
//! |----------------------------------------|--------------------------------------------------|
//! | `wasi:clocks/monotonic-clock.now`      | a number: nanoseconds since the entry's last `now` (the first: the reading) |
//! | `wasi:clocks/wall-clock.now`           | `[seconds, nanoseconds]`                          |
//! | `...monotonic-clock.subscribe-duration`| `{"sleep": nanoseconds}`                          |
//! | `...monotonic-clock.subscribe-instant` | `{"until": instant}`                              |
//!
//! A monotonic reading below the one before it (never from a real clock) is written as
//! `{"at": reading}`. [`expand`] gives back the calls exactly as they were made.

use serde_json::{Value, json};

pub const MONOTONIC: &str = "wasi:clocks/monotonic-clock";
pub const WALL: &str = "wasi:clocks/wall-clock";

/// One call as the tape sees it: interface, function, arguments, result.
pub type Call = (String, String, Value, Value);

/// Compacts the clock calls of one entry.
#[derive(Debug, Default)]
pub struct Compactor {
    /// The last monotonic reading in the entry.
    last: Option<u64>,
}

impl Compactor {
    /// The compact value of a call, or None when it is not a clock call (it is written as
    /// an ordinary call).
    pub fn compact(&mut self, interface: &str, function: &str, args: &Value, result: &Value) -> Option<Value> {
        match (interface, function) {
            (MONOTONIC, "now") if args.is_null() => {
                let now = result.as_u64()?;
                let value = match self.last {
                    None => json!(now),
                    Some(last) if now >= last => json!(now - last),
                    Some(_) => json!({ "at": now }),
                };
                self.last = Some(now);
                Some(value)
            }
            (WALL, "now") if args.is_null() => {
                let [seconds, nanos] = result.as_array()?.as_slice() else {
                    return None;
                };
                Some(json!([seconds.as_u64()?, nanos.as_u64()?]))
            }
            (MONOTONIC, "subscribe-duration") if result.is_null() => Some(json!({ "sleep": args.as_u64()? })),
            (MONOTONIC, "subscribe-instant") if result.is_null() => Some(json!({ "until": args.as_u64()? })),
            _ => None,
        }
    }
}

/// The calls of a [`crate::Entry::Clocks`], in order.
pub fn expand(values: &[Value]) -> Result<Vec<Call>, String> {
    let mut last: Option<u64> = None;
    let call = |function: &str, args: Value, result: Value| (MONOTONIC.to_string(), function.to_string(), args, result);
    values
        .iter()
        .map(|value| {
            let bad = || format!("a clock reading of the journal is not one wharf writes: {value}");
            match value {
                Value::Number(n) => {
                    let n = n.as_u64().ok_or_else(bad)?;
                    let now = match last {
                        None => n,
                        Some(last) => last.checked_add(n).ok_or_else(bad)?,
                    };
                    last = Some(now);
                    Ok(call("now", Value::Null, json!(now)))
                }
                Value::Array(parts) => match parts.as_slice() {
                    [Value::Number(s), Value::Number(ns)] if s.is_u64() && ns.is_u64() => {
                        Ok((WALL.to_string(), "now".to_string(), Value::Null, value.clone()))
                    }
                    _ => Err(bad()),
                },
                Value::Object(fields) if fields.len() == 1 => {
                    let (key, n) = fields.iter().next().expect("one field");
                    let n = n.as_u64().ok_or_else(bad)?;
                    match key.as_str() {
                        "at" => {
                            last = Some(n);
                            Ok(call("now", Value::Null, json!(n)))
                        }
                        "sleep" => Ok(call("subscribe-duration", json!(n), Value::Null)),
                        "until" => Ok(call("subscribe-instant", json!(n), Value::Null)),
                        _ => Err(bad()),
                    }
                }
                _ => Err(bad()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_calls_come_back_as_they_were_made() {
        let calls: Vec<Call> = vec![
            (MONOTONIC.into(), "now".into(), Value::Null, json!(5_000_000_123u64)),
            (MONOTONIC.into(), "now".into(), Value::Null, json!(5_000_000_900u64)),
            (WALL.into(), "now".into(), Value::Null, json!([1_790_000_000u64, 42])),
            (
                MONOTONIC.into(),
                "subscribe-duration".into(),
                json!(1_000_000),
                Value::Null,
            ),
            (MONOTONIC.into(), "now".into(), Value::Null, json!(4u64)),
            (MONOTONIC.into(), "subscribe-instant".into(), json!(99), Value::Null),
            (MONOTONIC.into(), "now".into(), Value::Null, json!(10u64)),
        ];
        let mut compactor = Compactor::default();
        let values: Vec<Value> = calls
            .iter()
            .map(|(i, f, a, r)| compactor.compact(i, f, a, r).expect("a clock call"))
            .collect();
        assert_eq!(values[1], json!(777), "a reading is the time since the last");
        assert_eq!(values[4], json!({ "at": 4 }), "a reading that went back is whole");
        assert_eq!(expand(&values).unwrap(), calls);
        let text = serde_json::to_string(&values).unwrap();
        assert!(text.len() < 100, "{text}");
    }

    #[test]
    fn other_calls_are_not_clock_calls_and_forged_readings_are_refused() {
        let mut compactor = Compactor::default();
        assert_eq!(
            compactor.compact("wharf:step/log", "info", &json!("x"), &Value::Null),
            None
        );
        assert_eq!(
            compactor.compact(MONOTONIC, "resolution", &Value::Null, &json!(1)),
            None
        );
        for forged in [
            json!(-1),
            json!("now"),
            json!([1]),
            json!({ "nap": 1 }),
            json!({ "at": 1, "x": 2 }),
        ] {
            assert!(expand(std::slice::from_ref(&forged)).is_err(), "{forged}");
        }
        assert!(expand(&[json!(u64::MAX), json!(1)]).is_err(), "an overflowing reading");
    }
}
