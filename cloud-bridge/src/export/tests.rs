use std::collections::BTreeMap;

use super::*;

fn raw(version: u32, input: &str, label: &str) -> Raw {
    Raw {
        device: "gw-1".into(),
        seq: 1,
        ts_ms: 1_795_000_000_250,
        model: "vib".into(),
        version,
        bundle: "ab".into(),
        reason: "sample".into(),
        label: label.into(),
        confidence: Some(0.5),
        input: input.into(),
        output: r#"[{"name":"p","shape":[1,2],"datatype":"FP32","data":[0.25,0.75]}]"#.into(),
    }
}

#[test]
fn layout_is_the_union_of_versions_features_newest_first() {
    let mut names = BTreeMap::new();
    names.insert(1, ("x".to_owned(), vec!["a".to_owned(), "b".to_owned()]));
    names.insert(2, ("x".to_owned(), vec!["b".to_owned(), "c".to_owned()]));
    let t = |v: &str| format!(r#"[{{"name":"x","shape":[1,2],"datatype":"FP32","data":{v}}}]"#);
    let e = assemble(
        &names,
        vec![raw(1, &t("[1,2]"), "hot"), raw(2, &t("[3,4]"), "")],
        None,
    );
    assert_eq!(e.layout.features, ["b", "c", "a"]);
    assert_eq!(e.layout.outputs, ["output:p[0]", "output:p[1]"]);
    assert_eq!(e.rows[0].features, [Some(2.0), None, Some(1.0)]);
    assert_eq!(e.rows[1].features, [Some(3.0), Some(4.0), None]);
    assert_eq!(e.rows[0].prediction.as_deref(), Some("hot"));
    assert_eq!(
        e.rows[1].prediction, None,
        "an empty label is no prediction"
    );
    assert_eq!(e.rows[1].outputs, [Some(0.25), Some(0.75)]);
    let empty = assemble(&names, Vec::new(), Some(1));
    assert_eq!(
        empty.layout.features,
        ["a", "b"],
        "no rows: the version's names"
    );
}

#[test]
fn unnamed_inputs_get_positional_columns() {
    let e = assemble(
        &BTreeMap::new(),
        vec![raw(
            3,
            r#"[{"name":"img","shape":[1,2],"datatype":"FP32","data":[5,6]}]"#,
            "",
        )],
        None,
    );
    assert_eq!(e.layout.features, ["input:img[0]", "input:img[1]"]);
    assert_eq!(e.rows[0].features, [Some(5.0), Some(6.0)]);
}

#[test]
fn csv_quotes_text_and_leaves_nulls_empty() {
    let mut e = assemble(&BTreeMap::new(), vec![raw(1, "[]", "a,\"b\"")], None);
    e.rows[0].score = None;
    let mut out = Vec::new();
    write_csv(&e, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "label,prediction,score,output:p[0],output:p[1],ts,device,model,version,seq,reason,bundle"
    );
    assert_eq!(
        lines.next().unwrap(),
        ",\"a,\"\"b\"\"\",,0.25,0.75,2026-11-18T11:06:40.250Z,gw-1,vib,1,1,sample,ab"
    );
}

#[test]
fn times_and_formats() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(-5), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.500Z");
    assert_eq!("csv".parse::<Format>().unwrap(), Format::Csv);
    let e = "xlsx".parse::<Format>().unwrap_err().to_string();
    assert!(e.contains("not parquet, jsonl or csv"), "{e}");
    assert!(
        parse_time("99999999999999999", 0).is_err(),
        "overflow is an error"
    );
}

#[test]
fn the_command_names_every_option_and_quotes_paths() {
    let q = CaptureQuery {
        model: "vib".into(),
        version: Some(2),
        since_ms: Some(1_795_000_000_500),
        until_ms: None,
        devices: vec!["gw-1".into()],
    };
    assert_eq!(
        q.command(Some(Path::new("/srv/my data"))),
        "outpost-bridge --data-dir '/srv/my data' export captures --model vib:2 \
         --since 2026-11-18T11:06:40Z --device gw-1 --format parquet -o vib-v2-captures.parquet"
    );
    assert!(!q.command(None).contains("--data-dir"));
}
