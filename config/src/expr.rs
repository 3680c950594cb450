//! Expressions in pipeline files (`filter`'s `where`, `project`'s columns): column references,
//! literals, typed literals (`date '2024-07-01'`, `timestamp '2024-07-01 12:00:00'`), casts
//! (`cast(x as int64)`, and `try_cast`, which gives null where `cast` fails), arithmetic,
//! comparisons, `in (...)`, `between ... and ...`, `like` (`%` any run, `_` one character),
//! `case when ... then ... else ... end`, the functions of [`Func`], `and` / `or` / `not`,
//! `is null` / `is not null`.
//!
//! ```text
//!  or      := and ("or" and)*
//!  and     := not ("and" not)*
//!  not     := "not" not | compare
//!  compare := sum (("==" | "!=" | "<" | "<=" | ">" | ">=") sum
//!                  | "not"? ("in" "(" or ("," or)* ")" | "between" sum "and" sum | "like" 'pattern'))?
//!             ("is" "not"? "null")?
//!  sum     := product (("+" | "-") product)*
//!  product := unary (("*" | "/" | "%") unary)*
//!  unary   := "-" unary | primary
//!  primary := number | 'string' | true | false | null | column | `quoted column` | "(" or ")"
//!           | ("cast" | "try_cast") "(" or "as" type ")" | ("date" | "timestamp") 'string'
//!           | function "(" or ("," or)* ")" | "case" ("when" or "then" or)+ ("else" or)? "end"
//!  type    := int8 | int16 | int32 | int64 | uint8 | ... | uint64 | float32 | float64 | bool
//!           | string | date | timestamp | decimal "(" precision "," scale ")"   (and SQL aliases)
//! ```
//!
//! Chains of `and` and of `or` become one node with every operand ([`Expr::Chain`]), so a
//! filter of thousands of `or`-ed comparisons is a shallow tree. Any expression nesting deeper
//! than [`MAX_DEPTH`] levels (parentheses, `not`, `-`, long arithmetic chains) is refused with a
//! message, never a stack overflow.

/// The deepest expression tree accepted (an `and`/`or` chain counts one level however long).
pub const MAX_DEPTH: usize = 64;

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// Integer.
    Int(i64),
    /// Floating point.
    Float(f64),
    /// String.
    Str(String),
    /// Boolean.
    Bool(bool),
    /// Null.
    Null,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

/// Functions callable in expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    /// `coalesce(a, b, ...)`: the first non-null argument.
    Coalesce,
    /// `lower(s)`: the string in lower case.
    Lower,
    /// `upper(s)`: the string in upper case.
    Upper,
    /// `length(s)`: characters in the string.
    Length,
    /// `starts_with(s, prefix)`.
    StartsWith,
    /// `abs(x)`.
    Abs,
    /// `round(x)` or `round(x, digits)`: half away from zero.
    Round,
    /// `year(d)`, of a date or timestamp.
    Year,
    /// `month(d)`: 1 to 12.
    Month,
    /// `day(d)`: day of the month, 1 to 31.
    Day,
}

/// Every function: name, least and most arguments.
const FUNCS: &[(&str, Func, usize, usize)] = &[
    ("coalesce", Func::Coalesce, 1, usize::MAX),
    ("lower", Func::Lower, 1, 1),
    ("upper", Func::Upper, 1, 1),
    ("length", Func::Length, 1, 1),
    ("starts_with", Func::StartsWith, 2, 2),
    ("abs", Func::Abs, 1, 1),
    ("round", Func::Round, 1, 2),
    ("year", Func::Year, 1, 1),
    ("month", Func::Month, 1, 1),
    ("day", Func::Day, 1, 1),
];

impl Func {
    /// The function's name as written.
    pub fn name(self) -> &'static str {
        FUNCS.iter().find(|f| f.1 == self).map_or("?", |f| f.0)
    }
}

/// The target type of a cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastType {
    /// An integer of `bits` (8, 16, 32, 64) bits, signed or not.
    Int {
        /// Width.
        bits: u8,
        /// Signed.
        signed: bool,
    },
    /// A float of 32 or 64 bits.
    Float(u8),
    /// Boolean.
    Bool,
    /// UTF-8 string.
    String,
    /// Calendar date (days since 1970-01-01).
    Date,
    /// Timestamp in microseconds, without a time zone.
    Timestamp,
    /// Decimal of `precision` digits (1 to 76), `scale` of them after the point.
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
}

impl CastType {
    /// The type named `name` (case-insensitive; SQL aliases such as `bigint`, `double`, `varchar`
    /// accepted), `decimal` aside.
    fn named(name: &str) -> Option<CastType> {
        let int = |bits, signed| Some(CastType::Int { bits, signed });
        match name.to_ascii_lowercase().as_str() {
            "int8" | "tinyint" => int(8, true),
            "int16" | "smallint" => int(16, true),
            "int32" | "int" | "integer" => int(32, true),
            "int64" | "bigint" | "long" => int(64, true),
            "uint8" => int(8, false),
            "uint16" => int(16, false),
            "uint32" => int(32, false),
            "uint64" => int(64, false),
            "float32" | "float" | "real" => Some(CastType::Float(32)),
            "float64" | "double" => Some(CastType::Float(64)),
            "bool" | "boolean" => Some(CastType::Bool),
            "string" | "utf8" | "varchar" | "text" => Some(CastType::String),
            "date" | "date32" => Some(CastType::Date),
            "timestamp" => Some(CastType::Timestamp),
            _ => None,
        }
    }
}

/// An expression tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A column by name.
    Column(String),
    /// A constant.
    Literal(Literal),
    /// `not e`.
    Not(Box<Expr>),
    /// `-e`.
    Neg(Box<Expr>),
    /// `e is null` (`negated`: `is not null`).
    IsNull {
        /// Operand.
        expr: Box<Expr>,
        /// `is not null`.
        negated: bool,
    },
    /// `l op r` (arithmetic and comparisons).
    Binary(Box<Expr>, BinOp, Box<Expr>),
    /// `e1 and e2 and ...` or `e1 or e2 or ...` (`op` is [`BinOp::And`] or [`BinOp::Or`]):
    /// every operand, in order.
    Chain(BinOp, Vec<Expr>),
    /// A function call.
    Call(Func, Vec<Expr>),
    /// `e in (items)` (`negated`: `not in`): as SQL, null when no item matches and an item or
    /// `e` is null.
    InList {
        /// Operand.
        expr: Box<Expr>,
        /// The list.
        items: Vec<Expr>,
        /// `not in`.
        negated: bool,
    },
    /// `e between low and high` (both ends included; `negated`: `not between`).
    Between {
        /// Operand.
        expr: Box<Expr>,
        /// Lower end.
        low: Box<Expr>,
        /// Upper end.
        high: Box<Expr>,
        /// `not between`.
        negated: bool,
    },
    /// `e like 'pattern'`: `%` matches any run of characters, `_` one (`negated`: `not like`).
    Like {
        /// Operand.
        expr: Box<Expr>,
        /// The pattern.
        pattern: String,
        /// `not like`.
        negated: bool,
    },
    /// `case when c1 then v1 ... else v end`: the value of the first true condition, else
    /// `otherwise` (null without `else`).
    Case {
        /// (condition, value) in order.
        branches: Vec<(Expr, Expr)>,
        /// The `else` value.
        otherwise: Option<Box<Expr>>,
    },
    /// `cast(e as TYPE)`; with `lenient` (`try_cast`) a value that does not convert becomes
    /// null instead of failing the stage. Typed literals are casts of a string.
    Cast {
        /// Operand.
        expr: Box<Expr>,
        /// Target type.
        to: CastType,
        /// `try_cast`.
        lenient: bool,
    },
}

impl Expr {
    /// Every column the expression reads, in order of first use.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Expr::Column(c) => {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
            Expr::Literal(_) => {}
            Expr::Not(e)
            | Expr::Neg(e)
            | Expr::IsNull { expr: e, .. }
            | Expr::Cast { expr: e, .. }
            | Expr::Like { expr: e, .. } => {
                e.collect(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.collect(out)),
            Expr::InList { expr, items, .. } => {
                expr.collect(out);
                items.iter().for_each(|a| a.collect(out));
            }
            Expr::Between { expr, low, high, .. } => {
                expr.collect(out);
                low.collect(out);
                high.collect(out);
            }
            Expr::Case { branches, otherwise } => {
                for (c, v) in branches {
                    c.collect(out);
                    v.collect(out);
                }
                if let Some(e) = otherwise {
                    e.collect(out);
                }
            }
            Expr::Binary(l, _, r) => {
                l.collect(out);
                r.collect(out);
            }
            Expr::Chain(_, items) => {
                for e in items {
                    e.collect(out);
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(String),
    Str(String),
    Op(&'static str),
}

/// The tokens of `text`, each with its position in characters (0-based). Works on characters,
/// not bytes: identifiers and quoted names may hold any letters.
fn tokens(text: &str) -> Result<Vec<(usize, Tok)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let at = |k: usize| chars.get(k).copied();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let start = i;
            while at(i).is_some_and(|d| d.is_ascii_digit() || matches!(d, '.' | '_' | 'e' | 'E')) {
                i += 1;
            }
            out.push((start, Tok::Num(chars[start..i].iter().filter(|d| **d != '_').collect())));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while at(i).is_some_and(|d| d.is_alphanumeric() || d == '_' || d == '.') {
                i += 1;
            }
            out.push((start, Tok::Ident(chars[start..i].iter().collect())));
        } else if c == '\'' || c == '`' {
            let start = i;
            let end = chars[i + 1..]
                .iter()
                .position(|d| *d == c)
                .ok_or_else(|| format!("unclosed {c} at position {}", start + 1))?;
            let s: String = chars[i + 1..i + 1 + end].iter().collect();
            i += end + 2;
            out.push((start, if c == '`' { Tok::Ident(s) } else { Tok::Str(s) }));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op: &'static str = match two.as_str() {
                "==" => "==",
                "!=" => "!=",
                "<=" => "<=",
                ">=" => ">=",
                _ => match c {
                    '<' => "<",
                    '>' => ">",
                    '+' => "+",
                    '-' => "-",
                    '*' => "*",
                    '/' => "/",
                    '%' => "%",
                    '(' => "(",
                    ')' => ")",
                    ',' => ",",
                    _ => return Err(format!("unexpected `{c}` at position {}", i + 1)),
                },
            };
            out.push((i, Tok::Op(op)));
            // Operators are ASCII: as many characters as bytes.
            i += op.len();
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    at: usize,
    len: usize,
    /// Parentheses and prefix operators open at the current position.
    open: usize,
}

/// A parsed expression and its depth.
type Parsed = (Expr, usize);

fn too_deep(pos: usize) -> String {
    format!(
        "the expression nests more than {MAX_DEPTH} levels deep at position {pos}; split it (long `and`/`or` chains are fine)"
    )
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.1)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.len, |t| t.0) + 1
    }

    fn keyword(&mut self, k: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(k)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn op(&mut self, ops: &[&'static str]) -> Option<&'static str> {
        match self.peek() {
            Some(Tok::Op(o)) if ops.contains(o) => {
                let o = *o;
                self.at += 1;
                Some(o)
            }
            _ => None,
        }
    }

    /// A node one level above `depth`, or the error when that is too deep.
    fn deeper(&self, depth: usize) -> Result<usize, String> {
        if depth >= MAX_DEPTH { Err(too_deep(self.pos())) } else { Ok(depth + 1) }
    }

    fn chain(
        &mut self,
        word: &str,
        op: BinOp,
        next: fn(&mut Parser) -> Result<Parsed, String>,
    ) -> Result<Parsed, String> {
        let (first, mut depth) = next(self)?;
        let mut items = vec![first];
        while self.keyword(word) {
            let (e, d) = next(self)?;
            depth = depth.max(d);
            items.push(e);
        }
        if items.len() == 1 {
            return Ok((items.remove(0), depth));
        }
        Ok((Expr::Chain(op, items), self.deeper(depth)?))
    }

    fn or(&mut self) -> Result<Parsed, String> {
        self.chain("or", BinOp::Or, Parser::and)
    }

    fn and(&mut self) -> Result<Parsed, String> {
        self.chain("and", BinOp::And, Parser::not)
    }

    fn not(&mut self) -> Result<Parsed, String> {
        if self.keyword("not") {
            // Checked before descending, so that `not not not ...` cannot exhaust the stack.
            self.deeper(self.nesting())?;
            let (e, d) = self.nested(Parser::not)?;
            return Ok((Expr::Not(Box::new(e)), self.deeper(d)?));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Parsed, String> {
        let (mut l, mut depth) = self.sum()?;
        if let Some(o) = self.op(&["==", "!=", "<", "<=", ">", ">="]) {
            let op = match o {
                "==" => BinOp::Eq,
                "!=" => BinOp::Ne,
                "<" => BinOp::Lt,
                "<=" => BinOp::Le,
                ">" => BinOp::Gt,
                _ => BinOp::Ge,
            };
            let (r, d) = self.sum()?;
            depth = self.deeper(depth.max(d))?;
            l = Expr::Binary(Box::new(l), op, Box::new(r));
        } else {
            let before_not = self.at;
            let negated = self.keyword("not");
            if self.keyword("in") {
                if self.op(&["("]).is_none() {
                    return Err(format!("expected `(` after `in` at position {}", self.pos()));
                }
                let (items, d) = self.list()?;
                depth = self.deeper(depth.max(d))?;
                l = Expr::InList { expr: Box::new(l), items, negated };
            } else if self.keyword("between") {
                let (low, d1) = self.sum()?;
                if !self.keyword("and") {
                    return Err(format!("expected `and` in `between` at position {}", self.pos()));
                }
                let (high, d2) = self.sum()?;
                depth = self.deeper(depth.max(d1).max(d2))?;
                l = Expr::Between { expr: Box::new(l), low: Box::new(low), high: Box::new(high), negated };
            } else if self.keyword("like") {
                let Some(Tok::Str(pattern)) = self.peek().cloned() else {
                    return Err(format!("expected a 'pattern' after `like` at position {}", self.pos()));
                };
                self.at += 1;
                depth = self.deeper(depth)?;
                l = Expr::Like { expr: Box::new(l), pattern, negated };
            } else if negated {
                self.at = before_not;
            }
        }
        if self.keyword("is") {
            let negated = self.keyword("not");
            if !self.keyword("null") {
                return Err(format!("expected `null` after `is` at position {}", self.pos()));
            }
            depth = self.deeper(depth)?;
            l = Expr::IsNull { expr: Box::new(l), negated };
        }
        Ok((l, depth))
    }

    fn sum(&mut self) -> Result<Parsed, String> {
        let (mut l, mut depth) = self.product()?;
        while let Some(o) = self.op(&["+", "-"]) {
            let op = if o == "+" { BinOp::Add } else { BinOp::Sub };
            let (r, d) = self.product()?;
            depth = self.deeper(depth.max(d))?;
            l = Expr::Binary(Box::new(l), op, Box::new(r));
        }
        Ok((l, depth))
    }

    fn product(&mut self) -> Result<Parsed, String> {
        let (mut l, mut depth) = self.unary()?;
        while let Some(o) = self.op(&["*", "/", "%"]) {
            let op = match o {
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                _ => BinOp::Rem,
            };
            let (r, d) = self.unary()?;
            depth = self.deeper(depth.max(d))?;
            l = Expr::Binary(Box::new(l), op, Box::new(r));
        }
        Ok((l, depth))
    }

    fn unary(&mut self) -> Result<Parsed, String> {
        if self.op(&["-"]).is_some() {
            self.deeper(self.nesting())?;
            let (e, d) = self.nested(Parser::unary)?;
            return Ok((Expr::Neg(Box::new(e)), self.deeper(d)?));
        }
        self.primary()
    }

    /// How many parentheses and prefix operators enclose the current position.
    fn nesting(&self) -> usize {
        self.open
    }

    /// Parses with one more level of nesting (bounded, so recursion is too).
    fn nested(&mut self, f: fn(&mut Parser) -> Result<Parsed, String>) -> Result<Parsed, String> {
        if self.open >= MAX_DEPTH {
            return Err(too_deep(self.pos()));
        }
        self.open += 1;
        let r = f(self);
        self.open -= 1;
        r
    }

    fn primary(&mut self) -> Result<Parsed, String> {
        let pos = self.pos();
        let Some(tok) = self.peek().cloned() else {
            return Err(format!("expression ends early at position {pos}"));
        };
        self.at += 1;
        let leaf = |e: Expr| Ok((e, 1));
        match tok {
            Tok::Num(n) => {
                if n.contains(['.', 'e', 'E']) {
                    n.parse()
                        .map(|f| (Expr::Literal(Literal::Float(f)), 1))
                        .map_err(|_| format!("bad number `{n}` at position {pos}"))
                } else {
                    n.parse()
                        .map(|i| (Expr::Literal(Literal::Int(i)), 1))
                        .map_err(|_| format!("bad number `{n}` at position {pos}"))
                }
            }
            Tok::Str(s) => leaf(Expr::Literal(Literal::Str(s))),
            Tok::Ident(w) if w.eq_ignore_ascii_case("true") => leaf(Expr::Literal(Literal::Bool(true))),
            Tok::Ident(w) if w.eq_ignore_ascii_case("false") => leaf(Expr::Literal(Literal::Bool(false))),
            Tok::Ident(w) if w.eq_ignore_ascii_case("null") => leaf(Expr::Literal(Literal::Null)),
            Tok::Ident(w) if ["and", "or", "not", "is"].iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                Err(format!("unexpected `{w}` at position {pos}"))
            }
            Tok::Ident(w)
                if ["cast", "try_cast"].iter().any(|k| w.eq_ignore_ascii_case(k))
                    && self.peek() == Some(&Tok::Op("(")) =>
            {
                self.at += 1;
                let (e, d) = self.nested(Parser::or)?;
                if !self.keyword("as") {
                    return Err(format!("expected `as TYPE` in `{w}` at position {}", self.pos()));
                }
                let to = self.cast_type()?;
                if self.op(&[")"]).is_none() {
                    return Err(format!("expected `)` at position {}", self.pos()));
                }
                let lenient = w.eq_ignore_ascii_case("try_cast");
                Ok((Expr::Cast { expr: Box::new(e), to, lenient }, self.deeper(d)?))
            }
            Tok::Ident(w) if matches!(self.peek(), Some(Tok::Str(_))) => {
                let to = match w.to_ascii_lowercase().as_str() {
                    "date" => CastType::Date,
                    "timestamp" => CastType::Timestamp,
                    _ => return Err(format!("unexpected string after `{w}` at position {}", self.pos())),
                };
                let Some(Tok::Str(s)) = self.peek().cloned() else {
                    return Err(format!("expected a string at position {pos}"));
                };
                self.at += 1;
                let e = Expr::Cast { expr: Box::new(Expr::Literal(Literal::Str(s))), to, lenient: false };
                Ok((e, 2))
            }
            Tok::Ident(w)
                if w.eq_ignore_ascii_case("case")
                    && matches!(self.peek(), Some(Tok::Ident(k)) if k.eq_ignore_ascii_case("when")) =>
            {
                self.case()
            }
            Tok::Ident(w) if self.peek() == Some(&Tok::Op("(")) => {
                let Some(&(_, func, least, most)) = FUNCS.iter().find(|f| w.eq_ignore_ascii_case(f.0)) else {
                    let names: Vec<&str> = FUNCS.iter().map(|f| f.0).collect();
                    return Err(format!(
                        "unknown function `{w}` at position {pos}; expected one of: cast, try_cast, {}",
                        names.join(", ")
                    ));
                };
                self.at += 1;
                let (args, d) = self.list()?;
                if args.len() < least || args.len() > most {
                    let want = if least == most { format!("{least}") } else { format!("{least} or more") };
                    let want = if most == 2 && least == 1 { "1 or 2".to_string() } else { want };
                    return Err(format!(
                        "`{w}` at position {pos} takes {want} arguments, not {}",
                        args.len()
                    ));
                }
                Ok((Expr::Call(func, args), self.deeper(d)?))
            }
            Tok::Ident(w) => leaf(Expr::Column(w)),
            Tok::Op("(") => {
                let e = self.nested(Parser::or)?;
                if self.op(&[")"]).is_none() {
                    return Err(format!("expected `)` at position {}", self.pos()));
                }
                Ok(e)
            }
            Tok::Op(o) => Err(format!("unexpected `{o}` at position {pos}")),
        }
    }
}

impl Parser {
    /// Expressions separated by `,` up to the closing `)` (the `(` already read), and their
    /// deepest depth.
    fn list(&mut self) -> Result<(Vec<Expr>, usize), String> {
        let mut items = Vec::new();
        let mut depth = 1;
        loop {
            let (e, d) = self.nested(Parser::or)?;
            depth = depth.max(d);
            items.push(e);
            if self.op(&[","]).is_some() {
                continue;
            }
            if self.op(&[")"]).is_some() {
                return Ok((items, depth));
            }
            return Err(format!("expected `,` or `)` at position {}", self.pos()));
        }
    }

    /// `case when ... then ... [else ...] end`, after `case`.
    fn case(&mut self) -> Result<Parsed, String> {
        let mut branches = Vec::new();
        let mut depth = 1;
        while self.keyword("when") {
            let (c, d1) = self.nested(Parser::or)?;
            if !self.keyword("then") {
                return Err(format!("expected `then` at position {}", self.pos()));
            }
            let (v, d2) = self.nested(Parser::or)?;
            depth = depth.max(d1).max(d2);
            branches.push((c, v));
        }
        let otherwise = if self.keyword("else") {
            let (e, d) = self.nested(Parser::or)?;
            depth = depth.max(d);
            Some(Box::new(e))
        } else {
            None
        };
        if !self.keyword("end") {
            return Err(format!("expected `end` of `case` at position {}", self.pos()));
        }
        Ok((Expr::Case { branches, otherwise }, self.deeper(depth)?))
    }

    /// An integer token (the precision or scale of a decimal type).
    fn integer(&mut self, what: &str) -> Result<i64, String> {
        let pos = self.pos();
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.at += 1;
                n.parse().map_err(|_| format!("bad {what} `{n}` at position {pos}"))
            }
            _ => Err(format!("expected the {what} of `decimal(precision, scale)` at position {pos}")),
        }
    }

    /// A cast's target type, after `as`.
    fn cast_type(&mut self) -> Result<CastType, String> {
        let pos = self.pos();
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            return Err(format!("expected a type name at position {pos}"));
        };
        self.at += 1;
        if name.eq_ignore_ascii_case("decimal") || name.eq_ignore_ascii_case("numeric") {
            if self.op(&["("]).is_none() {
                return Err(format!("expected `decimal(precision, scale)` at position {}", self.pos()));
            }
            let precision = self.integer("precision")?;
            if self.op(&[","]).is_none() {
                return Err(format!("expected `,` at position {}", self.pos()));
            }
            let scale = self.integer("scale")?;
            if self.op(&[")"]).is_none() {
                return Err(format!("expected `)` at position {}", self.pos()));
            }
            if !(1..=76).contains(&precision) || !(0..=precision).contains(&scale) {
                return Err(format!(
                    "decimal({precision}, {scale}) at position {pos}: precision must be 1 to 76 and scale 0 to the precision"
                ));
            }
            return Ok(CastType::Decimal { precision: precision as u8, scale: scale as i8 });
        }
        CastType::named(&name).ok_or_else(|| {
            format!(
                "unknown type `{name}` at position {pos}; expected one of: int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, bool, string, date, timestamp, decimal(p, s)"
            )
        })
    }
}

/// Parses an expression.
///
/// # Errors
/// A message naming what is wrong and its position (1-based) in the text.
pub fn parse_expr(text: &str) -> Result<Expr, String> {
    let mut p = Parser { toks: tokens(text)?, at: 0, len: text.chars().count(), open: 0 };
    let (e, _) = p.or()?;
    if p.at < p.toks.len() {
        return Err(format!("unexpected text at position {}", p.pos()));
    }
    Ok(e)
}

#[cfg(test)]
mod tests;
