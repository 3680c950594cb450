use super::*;

fn col(c: &str) -> Box<Expr> {
    Box::new(Expr::Column(c.into()))
}

#[test]
fn long_chains_are_shallow_and_deep_nesting_is_refused_not_overflowed() {
    let text = (0..4000).map(|i| format!("k == {i}")).collect::<Vec<_>>().join(" or ");
    match parse_expr(&text).expect("4000 comparisons") {
        Expr::Chain(BinOp::Or, items) => assert_eq!(items.len(), 4000),
        other => panic!("expected a chain, got {other:?}"),
    }
    for deep in [
        format!("{}k{}", "(".repeat(7000), ")".repeat(7000)),
        format!("{}k", "not ".repeat(7000)),
        format!("{}k", "-".repeat(7000)),
        (0..7000).map(|i| format!("k{i}")).collect::<Vec<_>>().join(" + "),
    ] {
        let e = parse_expr(&deep).expect_err("too deep");
        assert!(e.contains("nests more than 64 levels"), "{e}");
    }
    assert!(parse_expr(&format!("{}k{}", "(".repeat(60), ")".repeat(60))).is_ok());
}

#[test]
fn letters_beyond_ascii_are_characters_not_bytes() {
    // Found by the `pipeline` fuzz target: a byte of a two-byte letter was taken for a
    // letter of its own, and the identifier was cut inside the character.
    let e = parse_expr("payload_lt %ef 3 == 0\u{610}r key").expect_err("two operands in a row");
    assert_eq!(e, "unexpected text at position 16");
    assert_eq!(parse_expr("größe > 3").expect("parses").columns(), vec!["größe".to_string()]);
    assert_eq!(parse_expr("`Ölpreis €` is null").expect("parses").columns(), vec!["Ölpreis €".to_string()]);
    let e = parse_expr("größe ⊕ 3").expect_err("not an operator");
    assert_eq!(e, "unexpected `⊕` at position 7");
    for text in ["\u{610}", "a\u{610}b", "'\u{610}", "x == 'é", "1\u{301}"] {
        let _ = parse_expr(text);
    }
}

#[test]
fn precedence_and_forms() {
    let e = parse_expr("a + 2 * b > 10 and not c is null or d == 'x'").expect("parses");
    let want = Expr::Chain(
        BinOp::Or,
        vec![
            Expr::Chain(
                BinOp::And,
                vec![
                    Expr::Binary(
                        Box::new(Expr::Binary(
                            col("a"),
                            BinOp::Add,
                            Box::new(Expr::Binary(
                                Box::new(Expr::Literal(Literal::Int(2))),
                                BinOp::Mul,
                                col("b"),
                            )),
                        )),
                        BinOp::Gt,
                        Box::new(Expr::Literal(Literal::Int(10))),
                    ),
                    Expr::Not(Box::new(Expr::IsNull { expr: col("c"), negated: false })),
                ],
            ),
            Expr::Binary(col("d"), BinOp::Eq, Box::new(Expr::Literal(Literal::Str("x".into())))),
        ],
    );
    assert_eq!(e, want);
    assert_eq!(e.columns(), vec!["a", "b", "c", "d"]);
    assert_eq!(
        parse_expr("`odd name` is not null").expect("quoted"),
        Expr::IsNull { expr: col("odd name"), negated: true }
    );
    assert_eq!(
        parse_expr("-(1.5e1)").expect("neg"),
        Expr::Neg(Box::new(Expr::Literal(Literal::Float(15.0))))
    );
}

#[test]
fn casts_and_typed_literals() {
    let cast = |e: Box<Expr>, to, lenient| Expr::Cast { expr: e, to, lenient };
    let s = |v: &str| Box::new(Expr::Literal(Literal::Str(v.into())));
    assert_eq!(
        parse_expr("cast(a as BIGINT)").expect("cast"),
        cast(col("a"), CastType::Int { bits: 64, signed: true }, false)
    );
    assert_eq!(
        parse_expr("try_cast(`Unit Price` as decimal(10, 2))").expect("try_cast"),
        cast(col("Unit Price"), CastType::Decimal { precision: 10, scale: 2 }, true)
    );
    assert_eq!(
        parse_expr("d >= date '2024-07-01'").expect("date literal"),
        Expr::Binary(col("d"), BinOp::Ge, Box::new(cast(s("2024-07-01"), CastType::Date, false)))
    );
    assert_eq!(
        parse_expr("timestamp '2024-07-01 12:00:00'").expect("timestamp literal"),
        cast(s("2024-07-01 12:00:00"), CastType::Timestamp, false)
    );
    assert_eq!(parse_expr("cast(a + 1 as uint8) > 2").expect("in a comparison").columns(), vec!["a"]);
    // `cast` and `date` stay usable as column names.
    assert_eq!(parse_expr("cast + date").expect("columns").columns(), vec!["cast", "date"]);
    let e = |t: &str| parse_expr(t).expect_err(t);
    assert!(e("cast(a int64)").contains("expected `as TYPE`"));
    assert!(e("cast(a as money)").contains("unknown type `money`"));
    assert!(e("cast(a as decimal(90, 2))").contains("precision must be 1 to 76"));
    assert!(e("cast(a as decimal(5 2))").contains("expected `,`"));
    assert!(e("cast(a as int64").contains("expected `)`"));
    assert!(e("name 'x'").contains("unexpected string after `name`"));
}

#[test]
fn lists_ranges_patterns_cases_and_calls() {
    let n = |i| Expr::Literal(Literal::Int(i));
    assert_eq!(
        parse_expr("a not in (1, 2)").expect("in"),
        Expr::InList { expr: col("a"), items: vec![n(1), n(2)], negated: true }
    );
    assert_eq!(
        parse_expr("a between 1 and b + 1 and c").expect("between inside and"),
        Expr::Chain(
            BinOp::And,
            vec![
                Expr::Between {
                    expr: col("a"),
                    low: Box::new(n(1)),
                    high: Box::new(Expr::Binary(col("b"), BinOp::Add, Box::new(n(1)))),
                    negated: false,
                },
                Expr::Column("c".into()),
            ]
        )
    );
    assert_eq!(
        parse_expr("s like 'a%'").expect("like"),
        Expr::Like { expr: col("s"), pattern: "a%".into(), negated: false }
    );
    assert_eq!(
        parse_expr("COALESCE(a, 0)").expect("call"),
        Expr::Call(Func::Coalesce, vec![Expr::Column("a".into()), n(0)])
    );
    assert_eq!(
        parse_expr("case when a then 1 else 2 end").expect("case"),
        Expr::Case { branches: vec![(Expr::Column("a".into()), n(1))], otherwise: Some(Box::new(n(2))) }
    );
    assert_eq!(parse_expr("case when x > 1 then y end").expect("case").columns(), vec!["x", "y"]);
    // Names of functions stay usable as columns.
    assert_eq!(parse_expr("year + day").expect("columns").columns(), vec!["year", "day"]);
    let e = |t: &str| parse_expr(t).expect_err(t);
    assert!(e("frobnicate(a)").contains("unknown function `frobnicate`"));
    assert!(e("lower(a, b)").contains("takes 1 arguments, not 2"));
    assert!(e("round()").contains("expression ends early") || e("round()").contains("unexpected `)`"));
    assert!(e("a in 1").contains("expected `(` after `in`"));
    assert!(e("a between 1").contains("expected `and` in `between`"));
    assert!(e("s like b").contains("expected a 'pattern'"));
    assert!(e("case when a then 1").contains("expected `end`"));
    assert!(e("coalesce(a b)").contains("expected `,` or `)`"));
}

#[test]
fn errors_say_where() {
    assert!(parse_expr("a > ").unwrap_err().contains("ends early at position 5"));
    assert!(parse_expr("(a > 1").unwrap_err().contains("expected `)`"));
    assert!(parse_expr("a ? b").unwrap_err().contains("unexpected `?` at position 3"));
    assert!(parse_expr("a is 3").unwrap_err().contains("expected `null`"));
    assert!(parse_expr("a b").unwrap_err().contains("unexpected text at position 3"));
}
