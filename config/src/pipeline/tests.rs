use super::*;
use crate::operator_spec::OperatorKind;

const GOOD: &str = r#"
[job]
name = "t"

[runtime]
channel_credit = "4MiB"
mesh_timeout = "5s"

[source.left]
kind = "generate"
rows = 1000

[source.right]
kind = "parquet"
paths = ["a.parquet", "b.parquet"]

[operator.joined]
kind = "join"
left = "left"
right = "right"
on = ["key"]

[sink.out]
kind = "summary"
input = "joined"
"#;

#[test]
fn a_good_pipeline_parses() {
    let p = parse_pipeline(GOOD, "good.toml").expect("valid");
    assert_eq!(p.name, "t");
    assert_eq!(p.runtime.channel_credit, 4 << 20);
    assert_eq!(p.runtime.mesh_timeout, std::time::Duration::from_secs(5));
    assert_eq!(p.sources.len(), 2);
    assert_eq!(p.sources[0].name, "left");
    assert!(
        matches!(p.sources[1].kind, SourceKind::Files { files: SourceFiles::List(ref l), .. } if l.len() == 2)
    );
    let OperatorKind::Join(j) = &p.operators[0].kind else { panic!("join expected") };
    assert_eq!(j.left_on, vec!["key"]);
    assert_eq!(j.right_on, vec!["key"]);
}

#[test]
fn every_error_is_reported_with_its_path() {
    let bad = r#"
[runtime]
mesh_timout = "5s"
peer_timeout = "soon"

[source.left]
kind = "generate"
rows = -3

[operator.joined]
kind = "join"
left = "left"
right = "nowhere"
on = ["key", 7]

[sink.out]
kind = "summary"
input = "joined"
extra = true
"#;
    let e = parse_pipeline(bad, "bad.toml").expect_err("invalid");
    let paths = e.paths();
    assert!(paths.contains(&"runtime.mesh_timout"), "{e}");
    assert!(paths.contains(&"runtime.peer_timeout"), "{e}");
    assert!(paths.contains(&"source.left.rows"), "{e}");
    assert!(paths.contains(&"operator.joined.on[1]"), "{e}");
    assert!(paths.contains(&"sink.out.extra"), "{e}");
    let text = e.to_string();
    assert!(text.contains("unknown key `mesh_timout`"), "{text}");
    assert!(text.contains("line 3"), "{text}");
}

#[test]
fn graph_errors_name_the_stage() {
    let bad = r#"
[source.a]
kind = "generate"
rows = 1

[operator.x]
kind = "shuffle"
input = "y"
keys = ["key"]

[operator.y]
kind = "shuffle"
input = "x"
keys = ["key"]

[sink.s]
kind = "summary"
input = "missing"
"#;
    let e = parse_pipeline(bad, "cycle.toml").expect_err("invalid");
    let text = e.to_string();
    assert!(text.contains("cycle: x -> y -> x"), "{text}");
    assert!(e.paths().contains(&"sink.s.input"), "{text}");
}

#[test]
fn a_name_used_twice_is_one_error_not_a_cascade() {
    let text = "[source.a]\nkind = \"generate\"\nrows = 1\n[operator.x]\nkind = \"shuffle\"\ninput = \"a\"\nkeys = [\"key\"]\n\
                [sink.x]\nkind = \"summary\"\ninput = \"x\"\n";
    let e = parse_pipeline(text, "dup.toml").expect_err("invalid");
    assert_eq!(e.paths(), vec!["sink.x"], "{e}");
    assert!(e.to_string().contains("already used by an operator"), "{e}");
}

#[test]
fn canonical_lines_ignore_layout_but_keep_values_and_key_order() {
    let a = "[source.s]\nkind = \"generate\"\nrows = 1_000\n[sink.o]\nkind = \"summary\"\ninput = \"s\"\n";
    let b = "# a comment\n[source.s]\nkind=\"generate\"  # here too\nrows = 1000\n\n[sink.o]\nkind = \"summary\"\ninput = \"s\"\n";
    let pa = parse_pipeline(a, "a").expect("a");
    assert_eq!(pa.canonical, parse_pipeline(b, "b").expect("b").canonical);
    assert!(pa.canonical.contains(&("source.s.rows".to_string(), "1000".to_string())));
    let swapped =
        "[source.s]\nrows = 1000\nkind = \"generate\"\n[sink.o]\nkind = \"summary\"\ninput = \"s\"\n";
    let ps = parse_pipeline(swapped, "s").expect("swapped");
    let differ: Vec<&(String, String)> = ps.canonical.iter().filter(|l| !pa.canonical.contains(l)).collect();
    assert_eq!(differ.len(), 1, "{differ:?}");
    assert_eq!(differ[0].0, "source.s");
}

#[test]
fn missing_sections_and_bad_toml() {
    let e = parse_pipeline("", "empty.toml").expect_err("invalid");
    assert!(e.paths().contains(&"source") && e.paths().contains(&"sink"), "{e}");
    let e = parse_pipeline("[source.a\nkind=1", "broken.toml").expect_err("invalid");
    assert!(e.to_string().contains("not valid TOML"), "{e}");
}
