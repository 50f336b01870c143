//! Release assets of the Heex packages, generated from the binaries' clap definitions: man
//! pages (section 8: a daemon and an administration tool) and bash, zsh and fish completions
//! for `heex-agent` and `heex-installer`.
//!
//! `heex-package-assets <dir>` writes them; `packaging/build-deb.sh` then has `cargo deb` pack
//! them with the binaries, the systemd unit and the sysusers.d entry (metadata in this crate's
//! `Cargo.toml`).
#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;

/// Man page section of both binaries.
pub const MAN_SECTION: &str = "8";

/// `heex-agent`'s command line.
pub fn agent_command() -> Command {
    heex_agent::cli::Cli::command()
}

/// `heex-installer`'s command line.
pub fn installer_command() -> Command {
    heex_installer::Cli::command()
}

/// Hand-written man page sections appended after the generated ones, per top-level command.
fn extra_sections(name: &str) -> &'static str {
    match name {
        "heex-agent" => AGENT_EXTRA,
        "heex-installer" => INSTALLER_EXTRA,
        _ => "",
    }
}

const EXIT_STATUS: &str = r#".SH "EXIT STATUS"
.TP
\fB0\fR
success (the installer also exits 0 when the machine is already enrolled)
.TP
\fB64\fR
usage error, a malformed API key (caught offline by its checksum), or \fB\-\-systemd\fR
on a machine not running systemd
.TP
\fB69\fR
server unreachable, or its certificate does not match the pinned CA
.TP
\fB70\fR
unexpected failure, or the service manager failed (\fB\-\-systemd\fR)
.TP
\fB73\fR
a local file could not be read or written
.TP
\fB77\fR
the server refused the API key: unknown, revoked or expired
.TP
\fB78\fR
configuration or credentials missing, unreadable or corrupt
"#;

const AGENT_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/heex/agent.toml\fR
configuration written by \fBheex\-installer\fR(8)
.TP
\fI/var/lib/heex/\fR
\fBdevice.key\fR (0600), \fBdevice.crt\fR, \fBca.crt\fR, \fBstatus.json\fR
.TP
\fI/usr/lib/systemd/system/heex\-agent.service\fR
the hardened service; it runs as the system user \fBheex\fR
.SH ENVIRONMENT
.TP
\fBHEEX_AGENT_CONFIG\fR
configuration file, instead of \fB\-\-config\fR
.TP
\fBRUST_LOG\fR
log filter for stderr (default \fBinfo\fR)
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
set by systemd: READY, WATCHDOG and STOPPING notifications
"#;

const INSTALLER_EXTRA: &str = r#".SH ENVIRONMENT
.TP
\fBHEEX_API_KEY\fR
the API key (spent once, never stored)
.TP
\fBHEEX_API_KEY_FILE\fR
a file holding the API key; setting both variables is refused
.SH FILES
.TP
\fI/etc/heex/agent.toml\fR
agent configuration
.TP
\fI/var/lib/heex/\fR
\fBdevice.key\fR (0600), \fBdevice.crt\fR, \fBca.crt\fR
.TP
\fI/etc/systemd/system/heex\-agent.service\fR
written by \fB\-\-systemd\fR unless the package installed the unit
"#;

const SEE_ALSO: &str = r#".SH "SEE ALSO"
\fBheex\-agent\fR(8), \fBheex\-installer\fR(8), \fBsystemctl\fR(1)
"#;

/// The man page of `cmd` (already built, so subcommands carry their full names) in roff.
fn man_page(cmd: Command, top: &str) -> io::Result<Vec<u8>> {
    let has_args = cmd.get_arguments().any(|a| !a.is_hide_set());
    let has_subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let man = Man::new(cmd)
        .section(MAN_SECTION)
        .manual("Heex")
        .source(format!("Heex {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if has_args {
        man.render_options_section(&mut out)?;
    }
    if has_subcommands {
        man.render_subcommands_section(&mut out)?;
    }
    out.write_all(extra_sections(top).as_bytes())?;
    out.write_all(EXIT_STATUS.as_bytes())?;
    out.write_all(SEE_ALSO.as_bytes())?;
    Ok(out)
}

/// Man pages of `cmd` and its subcommands: `(file name, roff)`.
pub fn man_pages(cmd: Command) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let top = cmd.get_name().to_owned();
    let mut pages = Vec::new();
    let mut stack = vec![cmd];
    while let Some(cmd) = stack.pop() {
        stack.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
        pages.push((format!("{name}.{MAN_SECTION}"), man_page(cmd, &top)?));
    }
    pages.sort();
    Ok(pages)
}

/// The completion script of `cmd` for `shell`: `(file name, script)`, named as each shell's
/// vendor directory expects (`heex-agent`, `_heex-agent`, `heex-agent.fish`).
pub fn completion(cmd: Command, shell: Shell) -> (String, Vec<u8>) {
    let mut cmd = cmd;
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, &name, &mut script);
    let file = match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name,
    };
    (file, script)
}

/// Writes every asset under `out`: `man/*.8`, `bash/*`, `zsh/_*`, `fish/*.fish`. Returns the
/// files written.
pub fn write_assets(out: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut put = |dir: &str, file: &str, bytes: &[u8]| -> io::Result<()> {
        let dir = out.join(dir);
        fs::create_dir_all(&dir)?;
        let path = dir.join(file);
        fs::write(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    for cmd in [agent_command(), installer_command()] {
        for (file, roff) in man_pages(cmd.clone())? {
            put("man", &file, &roff)?;
        }
        for (dir, shell) in [
            ("bash", Shell::Bash),
            ("zsh", Shell::Zsh),
            ("fish", Shell::Fish),
        ] {
            let (file, script) = completion(cmd.clone(), shell);
            put(dir, &file, &script)?;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_man_pages_and_completions_for_both_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_assets(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(dir.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for want in [
            "man/heex-agent.8",
            "man/heex-agent-run.8",
            "man/heex-agent-status.8",
            "man/heex-installer.8",
            "bash/heex-agent",
            "bash/heex-installer",
            "zsh/_heex-agent",
            "zsh/_heex-installer",
            "fish/heex-agent.fish",
            "fish/heex-installer.fish",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        let installer = fs::read_to_string(dir.path().join("man/heex-installer.8")).unwrap();
        assert!(installer.contains("\n.TH heex-installer 8 "), "{installer}");
        assert!(installer.contains("systemd") && installer.contains("HEEX_API_KEY_FILE"));
        assert!(
            !installer.contains("systemd\\-root"),
            "hidden flags stay hidden"
        );
        let bash = fs::read_to_string(dir.path().join("bash/heex-installer")).unwrap();
        assert!(bash.contains("--no-start") && bash.contains("--ca-fingerprint"));
        let fish = fs::read_to_string(dir.path().join("fish/heex-agent.fish")).unwrap();
        assert!(fish.contains("status") && fish.contains("json"));
    }

    #[test]
    fn the_agent_command_line_is_well_formed() {
        agent_command().debug_assert();
        installer_command().debug_assert();
    }
}
