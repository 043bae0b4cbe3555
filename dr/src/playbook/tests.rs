use super::*;

const GOOD: &str = "\
name: demo
description: a playbook for the tests
params:
  flow:
    type: string
    default: a-to-b
    description: the flow
  mirror_config:
    type: string
    default: configs/mirror-a-to-b.yaml
    description: the mirror's config
  wait_ms:
    type: integer
    default: 60000
    min: 1000
    max: 600000
    description: how long to wait for lag 0
guards:
  - name: the flow runs
    check: flow_running
    with: { mirror_config: \"${mirror_config}\", flow: \"${flow}\" }
steps:
  - name: stop
    action: stop_flow
    with: { mirror_config: \"${mirror_config}\", flow: \"${flow}\" }
    timeout_ms: 5000
    undo: { action: start_flow, with: { mirror_config: \"${mirror_config}\", flow: \"${flow}\" } }
  - name: drain
    action: wait_for_zero_lag
    with: { mirror_config: \"${mirror_config}\", flow: \"${flow}\", wait_ms: \"${wait_ms}\" }
    timeout_ms: 700000
    retry: { attempts: 3, initial_backoff_ms: 100, max_backoff_ms: 1000 }
verify:
  - name: groups match
    check: verify_group_offsets
    with: { mirror_config: \"${mirror_config}\", flow: \"flows/${flow}\" }
on_failure: rollback
";

fn parse(text: &str) -> Result<Playbook, PlaybookError> {
    Playbook::parse(text, Path::new("dr-playbooks/demo.yaml"))
}

/// The line, column and reason of a refused playbook.
fn refused(text: &str) -> (usize, usize, String) {
    match parse(text) {
        Err(PlaybookError::Invalid {
            line,
            column,
            reason,
            ..
        }) => (line, column, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_good_playbook_loads_and_plans_with_defaults_and_given_values() {
    let p = parse(GOOD).unwrap();
    assert_eq!(p.order, vec![0, 1]);
    let plan = p.plan(&BTreeMap::new()).unwrap();
    assert_eq!(plan.params["wait_ms"], Value::Integer(60000));
    assert_eq!(plan.steps[1].planned.args["wait_ms"], Value::Integer(60000));
    assert_eq!(
        plan.verify[0].planned.args["flow"],
        Value::String("flows/a-to-b".into()),
        "a reference inside text is replaced"
    );
    let given = BTreeMap::from([
        ("flow".to_string(), "b-to-a".to_string()),
        ("wait_ms".to_string(), "2000".to_string()),
    ]);
    let plan = p.plan(&given).unwrap();
    assert_eq!(
        plan.steps[0].planned.args["flow"],
        Value::String("b-to-a".into())
    );
    assert_eq!(plan.steps[1].retry.attempts, 3);
    let text = plan.to_string();
    assert!(
        text.contains("1. stop: stop_flow(flow=b-to-a, mirror_config=configs/mirror-a-to-b.yaml)"),
        "{text}"
    );
    assert!(text.contains("undo: start_flow"), "{text}");
    // Every action of this playbook has an executor.
    assert!(!text.contains("cannot run yet"), "{text}");
}

#[test]
fn an_unknown_key_is_refused_at_its_line() {
    let text = GOOD.replace(
        "    timeout_ms: 5000\n",
        "    timeout_ms: 5000\n    retries: 3\n",
    );
    let (line, column, reason) = refused(&text);
    assert_eq!((line, column), (27, 14), "{reason}");
    assert!(reason.contains("unknown field `retries`"), "{reason}");
}

#[test]
fn an_unknown_action_is_refused_with_the_known_ones() {
    let text = GOOD.replace("action: stop_flow", "action: stop_flo");
    let (line, column, reason) = refused(&text);
    assert_eq!((line, column), (24, 13), "{reason}");
    assert!(reason.contains("unknown action `stop_flo`"), "{reason}");
    assert!(reason.contains("stop_flow"), "{reason}");
}

#[test]
fn a_missing_argument_and_an_unknown_one_are_refused() {
    let text = GOOD.replace(
        "    with: { mirror_config: \"${mirror_config}\", flow: \"${flow}\" }\n    timeout_ms: 5000",
        "    with: { mirror_config: \"${mirror_config}\" }\n    timeout_ms: 5000",
    );
    let (line, _, reason) = refused(&text);
    assert_eq!(line, 25, "{reason}");
    assert!(
        reason.contains("`stop_flow` needs the argument `flow`"),
        "{reason}"
    );

    let text = GOOD.replace(
        "flow: \"${flow}\" }\n    timeout_ms: 5000",
        "flow: \"${flow}\", site: a }\n    timeout_ms: 5000",
    );
    let (line, _, reason) = refused(&text);
    assert_eq!(line, 25, "{reason}");
    assert!(reason.contains("has no argument `site`"), "{reason}");
}

#[test]
fn a_reference_to_no_parameter_and_a_type_error_are_refused() {
    let text = GOOD.replace("wait_ms: \"${wait_ms}\"", "wait_ms: \"${wait}\"");
    let (line, _, reason) = refused(&text);
    assert_eq!(line, 30, "{reason}");
    assert!(reason.contains("`${wait}` names no parameter"), "{reason}");

    let text = GOOD.replace("wait_ms: \"${wait_ms}\"", "wait_ms: \"${flow}\"");
    let (_, _, reason) = refused(&text);
    assert!(
        reason.contains("`wait_for_zero_lag`'s argument `wait_ms` is an integer, not a string"),
        "{reason}"
    );

    let text = GOOD.replace("    default: 60000\n", "    default: soon\n");
    let (line, _, reason) = refused(&text);
    assert_eq!(line, 14, "{reason}");
    assert!(
        reason.contains("is an integer but its default is not"),
        "{reason}"
    );
}

#[test]
fn a_guard_that_changes_things_is_refused() {
    let text = GOOD.replace("check: flow_running", "check: stop_flow");
    let (line, _, reason) = refused(&text);
    assert_eq!(line, 20, "{reason}");
    assert!(reason.contains("must be a read-only action"), "{reason}");
}

#[test]
fn a_cycle_among_the_steps_is_refused_naming_it() {
    let text = GOOD
        .replace(
            "    timeout_ms: 5000\n",
            "    timeout_ms: 5000\n    after: [drain]\n",
        )
        .replace(
            "    timeout_ms: 700000\n",
            "    timeout_ms: 700000\n    after: [stop]\n",
        );
    let (line, _, reason) = refused(&text);
    assert!(line == 27 || line == 33, "{line}: {reason}");
    assert!(reason.contains("form a cycle"), "{reason}");
    assert!(
        reason.contains("stop") && reason.contains("drain"),
        "{reason}"
    );

    // Without the cycle, `after` reorders.
    let text = GOOD.replace(
        "    timeout_ms: 5000\n",
        "    timeout_ms: 5000\n    after: [drain]\n",
    );
    let p = parse(&text).unwrap();
    assert_eq!(p.order, vec![1, 0]);

    let text = GOOD.replace(
        "    timeout_ms: 5000\n",
        "    timeout_ms: 5000\n    after: [nothing]\n",
    );
    let (_, _, reason) = refused(&text);
    assert!(
        reason.contains("`nothing`, which is not a step"),
        "{reason}"
    );
}

#[test]
fn an_alias_bomb_is_refused_where_it_expands_and_so_is_too_large_a_file() {
    // A 401-node anchor used 2,000 times would be 800,000 serde_yaml values (a `with:` map
    // keeps them all; fuzz/regressions/playbook has that case).
    let items: Vec<String> = (0..200).map(|i| format!("k{i}: v")).collect();
    let text = GOOD.replace(
        "    timeout_ms: 5000\n",
        &format!(
            "    timeout_ms: 5000\n    extra: &e {{{}}}\n    more: [{}]\n",
            items.join(", "),
            vec!["*e"; 2000].join(", ")
        ),
    );
    let (line, column, reason) = refused(&text);
    assert!(reason.contains("aliases expand this document"), "{reason}");
    assert_eq!(line, 28, "{reason}");
    assert!(column > 10, "{column}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.yaml");
    std::fs::write(&path, format!("{GOOD}#{}\n", "x".repeat(1 << 20))).unwrap();
    match Playbook::load(&path) {
        Err(PlaybookError::Invalid { reason, .. }) => {
            assert!(reason.contains("a playbook may have at most"), "{reason}")
        }
        other => panic!("a 1 MiB playbook was not refused: {other:?}"),
    }
}

#[test]
fn limits_are_enforced() {
    let (_, _, reason) = refused(&GOOD.replace("timeout_ms: 5000", "timeout_ms: 0"));
    assert!(reason.contains("timeout_ms must be"), "{reason}");
    let (_, _, reason) = refused(&GOOD.replace("attempts: 3", "attempts: 50"));
    assert!(reason.contains("retry.attempts"), "{reason}");
    let (_, _, reason) =
        refused(&GOOD.replace("initial_backoff_ms: 100", "initial_backoff_ms: 5000"));
    assert!(
        reason.contains("initial_backoff_ms <= max_backoff_ms"),
        "{reason}"
    );
    let (_, _, reason) = refused(&GOOD.replace("name: demo", "name: other"));
    assert!(reason.contains("name and file must match"), "{reason}");
    let (_, _, reason) = refused(&GOOD.replace("    min: 1000\n", "    min: 700000\n"));
    assert!(
        reason.contains("min 700000 is above max 600000"),
        "{reason}"
    );
    // A step that may have taken effect when it timed out is never retried.
    let text = GOOD
        .replace("action: wait_for_zero_lag", "action: backup_site")
        .replace(
            "{ mirror_config: \"${mirror_config}\", flow: \"${flow}\", wait_ms: \"${wait_ms}\" }",
            "{ site_config: site-a.yaml, to: /backups }",
        );
    let (line, _, reason) = refused(&text);
    assert_eq!(line, 32, "{reason}");
    assert!(
        reason.contains("`backup_site` is not idempotent"),
        "{reason}"
    );
}

#[test]
fn plans_refuse_unknown_missing_mistyped_and_out_of_range_parameters() {
    let p = parse(GOOD).unwrap();
    let plan = |pairs: &[(&str, &str)]| {
        p.plan(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    assert!(plan(&[("flw", "x")]).contains("`${flw}` is given but is no parameter"));
    assert!(plan(&[("wait_ms", "soon")]).contains("`soon` is not"));
    assert!(plan(&[("wait_ms", "10")]).contains("outside 1000..=600000"));
    let no_default = parse(&GOOD.replace("    default: a-to-b\n", "")).unwrap();
    let e = no_default.plan(&BTreeMap::new()).unwrap_err().to_string();
    assert!(
        e.contains("`flow` (the flow) has no default: give it with --param flow="),
        "{e}"
    );
}

#[test]
fn a_guard_may_stop_applying_once_a_named_step_started_and_nothing_else_may() {
    let with_until = GOOD.replace(
        "    with: { mirror_config: \"${mirror_config}\", flow: \"${flow}\" }\nsteps:",
        "    with: { mirror_config: \"${mirror_config}\", flow: \"${flow}\" }\n    until: stop\nsteps:",
    );
    assert_ne!(with_until, GOOD);
    let plan = parse(&with_until).unwrap().plan(&BTreeMap::new()).unwrap();
    assert_eq!(
        plan.guards[0].until,
        Some(0),
        "the index of `stop` in run order"
    );
    assert!(
        plan.to_string().contains("(until `stop` has started)"),
        "{plan}"
    );
    let (line, _, reason) = refused(&with_until.replace("until: stop", "until: stpo"));
    assert_eq!(line, 22, "the `until` line: {reason}");
    assert!(reason.contains("no step named `stpo`"), "{reason}");
    let on_verify = GOOD.replace(
        "    with: { mirror_config: \"${mirror_config}\", flow: \"flows/${flow}\" }\non_failure",
        "    with: { mirror_config: \"${mirror_config}\", flow: \"flows/${flow}\" }\n    until: stop\non_failure",
    );
    assert_ne!(on_verify, GOOD);
    let (_, _, reason) = refused(&on_verify);
    assert!(reason.contains("only a guard may have `until`"), "{reason}");
}
