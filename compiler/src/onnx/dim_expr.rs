//! Symbolic dims spelled as expressions: `past_sequence_length + sequence_length` (Optimum's
//! attention mask and presents), `s0 + s1` or `2*s0` (torch.export). Such a dim is not a name
//! of its own: it has the value of its expression once the names it uses are bound, and the
//! names are what a user binds with `--dim`.
//!
//! Grammar: `expr := term (('+' | '-') term)*`, `term := atom (('*' | '//' | '%') atom)*`,
//! `atom := integer | name | '(' expr ')'`; names are `[A-Za-z_][A-Za-z0-9_.]*`. A spelling with
//! no operator, or one that does not parse, is a plain name.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(u64),
    Name(String),
    Op(&'static str),
}

fn lex(s: &str) -> Option<Vec<Tok>> {
    let b = s.as_bytes();
    let mut v = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            v.push(Tok::Int(s[start..i].parse().ok()?));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            v.push(Tok::Name(s[start..i].to_string()));
        } else if s[i..].starts_with("//") {
            v.push(Tok::Op("//"));
            i += 2;
        } else {
            v.push(Tok::Op(match c {
                b'+' => "+",
                b'-' => "-",
                b'*' => "*",
                b'%' => "%",
                b'(' => "(",
                b')' => ")",
                _ => return None,
            }));
            i += 1;
        }
    }
    Some(v)
}

/// The parsed tokens of `p` when it is an expression (it has an operator and parses).
fn tokens(p: &str) -> Option<Vec<Tok>> {
    let t = lex(p)?;
    if !t
        .iter()
        .any(|t| matches!(t, Tok::Op(o) if *o != "(" && *o != ")"))
    {
        return None;
    }
    let mut e = Eval {
        t: &t,
        i: 0,
        dims: None,
    };
    e.expr()?;
    (e.i == t.len()).then_some(t)
}

/// Whether `p` is an expression rather than a name.
pub fn is_expr(p: &str) -> bool {
    tokens(p).is_some()
}

/// The names an expression uses, in order of first use (empty for a plain name).
pub fn names(p: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for t in tokens(p).unwrap_or_default() {
        if let Tok::Name(n) = t
            && !v.contains(&n)
        {
            v.push(n);
        }
    }
    v
}

/// The value of expression `p` with the names in `dims`; `None` for a plain name, an unbound
/// name, a negative result, overflow or a division by zero.
pub fn eval(p: &str, dims: &BTreeMap<String, u64>) -> Option<u64> {
    let t = tokens(p)?;
    let mut e = Eval {
        t: &t,
        i: 0,
        dims: Some(dims),
    };
    let v = e.expr()?;
    u64::try_from(v).ok()
}

/// A recursive-descent pass over the tokens; without `dims` it only checks the syntax (every
/// name reads as 1).
struct Eval<'a> {
    t: &'a [Tok],
    i: usize,
    dims: Option<&'a BTreeMap<String, u64>>,
}

impl Eval<'_> {
    fn peek_op(&self) -> Option<&'static str> {
        match self.t.get(self.i) {
            Some(Tok::Op(o)) => Some(o),
            _ => None,
        }
    }

    fn expr(&mut self) -> Option<i128> {
        let mut v = self.term()?;
        while let Some(o @ ("+" | "-")) = self.peek_op() {
            self.i += 1;
            let r = self.term()?;
            v = if o == "+" {
                v.checked_add(r)?
            } else {
                v.checked_sub(r)?
            };
        }
        Some(v)
    }

    fn term(&mut self) -> Option<i128> {
        let mut v = self.atom()?;
        while let Some(o @ ("*" | "//" | "%")) = self.peek_op() {
            self.i += 1;
            let r = self.atom()?;
            v = match o {
                "*" => v.checked_mul(r)?,
                "//" => v.checked_div_euclid(r)?,
                _ => v.checked_rem_euclid(r)?,
            };
        }
        Some(v)
    }

    fn atom(&mut self) -> Option<i128> {
        let t = self.t.get(self.i)?.clone();
        self.i += 1;
        match t {
            Tok::Int(n) => Some(n as i128),
            Tok::Name(n) => match self.dims {
                Some(d) => d.get(&n).map(|&v| v as i128),
                None => Some(1),
            },
            Tok::Op("(") => {
                let v = self.expr()?;
                (self.peek_op() == Some(")")).then(|| self.i += 1)?;
                Some(v)
            }
            Tok::Op(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|&(k, x)| (k.to_string(), x)).collect()
    }

    #[test]
    fn optimum_and_torch_export_spellings_evaluate_from_their_names() {
        let d = dims(&[
            ("past_sequence_length", 16),
            ("sequence_length", 1),
            ("s0", 5),
        ]);
        assert_eq!(eval("past_sequence_length + sequence_length", &d), Some(17));
        assert_eq!(eval("2*s0 - 3", &d), Some(7));
        assert_eq!(eval("((s0 + 1)//2) % 2", &d), Some(1));
        assert_eq!(
            names("past_sequence_length + sequence_length"),
            ["past_sequence_length", "sequence_length"]
        );
    }

    #[test]
    fn plain_names_unbound_names_and_bad_spellings_are_not_evaluated() {
        let d = dims(&[("a", 3)]);
        assert!(!is_expr("batch_size") && names("batch_size").is_empty());
        assert_eq!(eval("a + b", &d), None);
        assert_eq!(eval("a - 4", &d), None);
        assert_eq!(eval("a // 0", &d), None);
        assert!(!is_expr("a + ") && !is_expr("a $ b") && !is_expr("(a + 1"));
    }
}
