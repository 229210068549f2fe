//! Conditions over a measurement: `result < 0.05`, `result >= 100 && result < 200`,
//! `result == 0 || result > 1000`. Comparisons of `result` with a number, joined by `&&`
//! (binding tighter) and `||`. A condition that does not read is an error before anything
//! is measured; NaN satisfies no comparison.

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Alternatives (`||`) of conjunctions (`&&`) of comparisons.
    any: Vec<Vec<Comparison>>,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Comparison {
    op: Op,
    value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, String> {
        let bad = |why: String| {
            format!("condition `{text}`: {why}; write e.g. `result < 0.05` or `result >= 1 && result <= 5`")
        };
        let mut any = Vec::new();
        for alternative in text.split("||") {
            let mut all = Vec::new();
            for part in alternative.split("&&") {
                all.push(comparison(part.trim()).map_err(bad)?);
            }
            any.push(all);
        }
        Ok(Condition {
            any,
            text: text.trim().to_string(),
        })
    }

    pub fn holds(&self, result: f64) -> bool {
        self.any.iter().any(|all| all.iter().all(|c| c.holds(result)))
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}

impl Comparison {
    fn holds(self, result: f64) -> bool {
        match self.op {
            Op::Lt => result < self.value,
            Op::Le => result <= self.value,
            Op::Gt => result > self.value,
            Op::Ge => result >= self.value,
            Op::Eq => result == self.value,
            Op::Ne => !result.is_nan() && result != self.value,
        }
    }
}

fn comparison(text: &str) -> Result<Comparison, String> {
    const OPS: [(&str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let Some((at, symbol, op)) = OPS
        .iter()
        .filter_map(|(symbol, op)| text.find(symbol).map(|at| (at, *symbol, *op)))
        .min_by_key(|(at, symbol, _)| (*at, std::cmp::Reverse(symbol.len())))
    else {
        return Err(format!("`{text}` compares nothing (use <, <=, >, >=, == or !=)"));
    };
    let (left, right) = (text[..at].trim(), text[at + symbol.len()..].trim());
    let number = |s: &str| s.parse::<f64>().ok().filter(|n| n.is_finite());
    match (left, right) {
        ("result", n) => number(n)
            .map(|value| Comparison { op, value })
            .ok_or_else(|| format!("`{n}` is not a number")),
        (n, "result") => number(n)
            .map(|value| Comparison { op: flipped(op), value })
            .ok_or_else(|| format!("`{n}` is not a number")),
        _ => Err(format!("`{text}` does not compare `result` with a number")),
    }
}

/// `0.05 > result` is `result < 0.05`.
fn flipped(op: Op) -> Op {
    match op {
        Op::Lt => Op::Gt,
        Op::Le => Op::Ge,
        Op::Gt => Op::Lt,
        Op::Ge => Op::Le,
        other => other,
    }
}
