//! The scenarios `pik bench` measures, the order runs take them in (rotated run by run, so drift
//! in the machine's speed hits every scenario alike), and the checks that a scenario can run on
//! this host, made before anything runs.

use anyhow::{bail, Result};
use std::path::Path;

/// One slot of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// kbuild with no cache: `make olddefconfig`, the build, the installs.
    Plain,
    /// `pik build` on an empty object store, no memo.
    Cold,
    /// `pik build` in a fresh build dir on the store a cold build filled, no memo.
    Warm,
    /// `pik build` of inputs the memo holds.
    Memo,
    /// A patch and a `--set` after a build, each rebuilt through pik (and through plain
    /// make in the plain run's build dir, when `plain` runs too).
    Edit,
    /// make through ccache (depend mode) on an emptied ccache.
    CcacheCold,
    /// make through ccache in a fresh build dir on the ccache a cold build filled.
    CcacheWarm,
    /// `pik build` distributed over the configured build hosts, empty store.
    Dist,
}

/// Every scenario, in the order of a run that is not rotated: fillers before their warm
/// counterparts.
pub const ALL: [Scenario; 8] = [
    Scenario::Plain,
    Scenario::Cold,
    Scenario::Warm,
    Scenario::Memo,
    Scenario::Edit,
    Scenario::CcacheCold,
    Scenario::CcacheWarm,
    Scenario::Dist,
];

/// The scenarios `--scenarios` takes when it is not given.
pub const DEFAULT: &str = "plain,cold,warm,memo,edit";

impl Scenario {
    /// The name records carry (edits carry their change's name instead).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Plain => "plain",
            Scenario::Cold => "cold",
            Scenario::Warm => "warm",
            Scenario::Memo => "memo",
            Scenario::Edit => "edit",
            Scenario::CcacheCold => "ccache-cold",
            Scenario::CcacheWarm => "ccache-warm",
            Scenario::Dist => "dist",
        }
    }

    /// Whether it runs the kernel's make itself on pik's tree and `.config`.
    pub fn uses_make(self) -> bool {
        matches!(
            self,
            Scenario::Plain | Scenario::CcacheCold | Scenario::CcacheWarm
        )
    }
}

/// Parses `--scenarios` (names as the user writes them: `ccache` is its cold and warm builds);
/// the result is in [`ALL`]'s order, without repeats.
pub fn parse(names: &[String]) -> Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for n in names.iter().flat_map(|n| n.split(',')).map(str::trim) {
        let add: &[Scenario] = match n {
            "plain" => &[Scenario::Plain],
            "cold" => &[Scenario::Cold],
            "warm" => &[Scenario::Warm],
            "memo" => &[Scenario::Memo],
            "edit" => &[Scenario::Edit],
            "ccache" => &[Scenario::CcacheCold, Scenario::CcacheWarm],
            "ccache-cold" => &[Scenario::CcacheCold],
            "ccache-warm" => &[Scenario::CcacheWarm],
            "dist" => &[Scenario::Dist],
            "" => &[],
            other => bail!(
                "unknown scenario {other:?}: choose from plain, cold, warm, memo, edit, ccache, dist"
            ),
        };
        out.extend_from_slice(add);
    }
    if out.is_empty() {
        bail!("no scenario to run: name some with --scenarios {DEFAULT}");
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The order of run `run` (0-based): the scenarios rotated by one more each run, so none
/// always comes first or right after the same other.
pub fn order(scenarios: &[Scenario], run: usize) -> Vec<Scenario> {
    let mut v = scenarios.to_vec();
    let n = v.len().max(1);
    v.rotate_left(run % n);
    v
}

/// What the host must have for `scenarios`, checked before anything runs: an error names
/// what to install or configure. `hosts` are the configured build hosts, `config` names the
/// config file, `pik` is the binary whose `pik build` the scenarios run.
pub fn check_host(
    scenarios: &[Scenario],
    hosts: &[String],
    config: &str,
    pik: &Path,
) -> Result<()> {
    let has = |s: Scenario| scenarios.contains(&s);
    let ccache = has(Scenario::CcacheCold) || has(Scenario::CcacheWarm);
    if ccache && crate::fsutil::which("ccache").is_none() {
        bail!(
            "the ccache scenario needs ccache on PATH: install the Debian package ccache \
             (or leave ccache out of --scenarios)"
        );
    }
    if scenarios.iter().any(|s| s.uses_make()) && crate::fsutil::which("make").is_none() {
        bail!("the plain and ccache scenarios need make: install the Debian package make");
    }
    if has(Scenario::Dist) {
        if hosts.is_empty() {
            bail!(
                "the dist scenario needs build hosts: set PIK_HOSTS=\"host1/8 host2/4\" or write \
                 `list = [\"host1/8\"]` under [hosts] in {config} (or leave dist out of \
                 --scenarios)"
            );
        }
        hosts_usable(pik, hosts)?;
    }
    Ok(())
}

/// `pik hosts check` of the build hosts: the dist scenario times builders, so every host must
/// answer and have the local compiler (else its jobs would quietly run here).
fn hosts_usable(pik: &Path, hosts: &[String]) -> Result<()> {
    let out = std::process::Command::new(pik)
        .args(["hosts", "check", "--timeout", "20", "--hosts"])
        .args(hosts)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("running `{} hosts check`: {e}", pik.display()))?;
    if !out.status.success() {
        bail!(
            "the dist scenario needs every build host usable, and `pik hosts check --hosts {}` \
             says:\n{}{}fix or remove those hosts (or leave dist out of --scenarios)",
            hosts.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_in_a_fixed_order_and_rotate() {
        let s = parse(&["memo,ccache".into(), "plain".into(), "memo".into()]).unwrap();
        assert_eq!(
            s,
            [
                Scenario::Plain,
                Scenario::Memo,
                Scenario::CcacheCold,
                Scenario::CcacheWarm
            ]
        );
        assert!(parse(&["nope".into()]).is_err());
        assert!(parse(&[",".into()]).is_err());
        let o = order(&s, 1);
        assert_eq!(o[0], Scenario::Memo);
        assert_eq!(o[3], Scenario::Plain);
        assert_eq!(order(&s, 4), s);
    }

    #[test]
    fn dist_without_hosts_fails_before_anything_runs() {
        let e = check_host(
            &[Scenario::Dist],
            &[],
            "/x/config.toml",
            Path::new("/bin/true"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("PIK_HOSTS") && e.contains("[hosts]"), "{e}");
        let e = check_host(
            &[Scenario::Dist],
            &["h/2".into()],
            "c",
            Path::new("/bin/false"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("hosts check"), "{e}");
        check_host(&[Scenario::Memo], &[], "c", Path::new("/bin/true")).unwrap();
    }
}
