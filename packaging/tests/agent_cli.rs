//! The man pages and completions of `heex-agent` come from a copy of its command line
//! (`heex_packaging::agent_cli`); this test holds the copy to the real binary, word for word.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use heex_tests::bin;

fn real_help(args: &[&str]) -> String {
    let out = Command::new(bin("heex-agent"))
        .args(args)
        .arg("-h")
        .env_remove("HEEX_AGENT_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "heex-agent {args:?} -h: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_copy_of_the_agent_command_line_matches_the_binary() {
    // The help shows the variable's value when it is set.
    assert!(std::env::var_os("HEEX_AGENT_CONFIG").is_none());
    let mut cmd = heex_packaging::agent_command();
    cmd.build();
    assert_eq!(cmd.render_help().to_string(), real_help(&[]));
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    assert_eq!(subcommands, ["run", "status", "help"]);
    for name in ["run", "status"] {
        let sub = cmd.find_subcommand_mut(name).unwrap();
        assert_eq!(sub.render_help().to_string(), real_help(&[name]), "{name}");
    }
}
