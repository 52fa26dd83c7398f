//! `Session::start_role`: a test runs an `#[ignore]`d test of its own binary
//! as a child process, passes it parameters, reads its lines, and kills it.

use std::time::Duration;

use labkit::session::{Session, role_param};

#[test]
fn a_role_runs_as_a_child_and_reads_its_parameters() {
    let mut child = Session::start_role("role_echo_param", &[("ROLE_WORD", "sixty-four")]);
    let (_, line) = child.read_until(
        "the role's `word:` line",
        |l| l.starts_with("word:"),
        Duration::from_secs(20),
    );
    assert_eq!(line, "word: sixty-four");
    assert_ne!(child.pid(), std::process::id());
    let status = child.wait(Duration::from_secs(20)).expect("the role exits");
    assert!(status.success(), "the role passed: {status:?}");
}

#[test]
#[ignore = "a child process of a_role_runs_as_a_child_and_reads_its_parameters"]
fn role_echo_param() {
    println!("word: {}", role_param("ROLE_WORD"));
}
