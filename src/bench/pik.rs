//! The scenarios that run `pik build` itself, as a user would (this very binary, as a child
//! process whose own progress shows on stderr): cold, warm, memo, the edits, dist; and the
//! untimed `--config-only` runs that give the make scenarios pik's tree and `.config`. Phase
//! times, cache counts and digests come from the manifest each build writes.

use super::measure::{self, Measured};
use super::record::{Cache, Edit, Phases, Record, Workload};
use super::runner::{Bench, Prep, RunDir};
use crate::build::kbuild::Kbuild;
use crate::input::workspace::Workspace;
use crate::output::manifest::Manifest;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// pik's object store for the bench, in the work dir: cold empties it, warm reuses it.
pub(super) const STORE: &str = "objects";

/// The line the edit patch adds: it changes the object (a new symbol in .rodata) and needs no
/// header, so it builds in any C file of the kernel.
const EDIT_LINE: &str =
    "static const char pik_bench_edit[] __attribute__((used)) = \"pik bench edit\";\n";

impl Bench<'_> {
    /// `pik build` of this bench's build into `build`, output at `out`, plus `extra`
    /// arguments, on the bench's object store; measured whole, then its manifest read.
    pub(super) fn pik_build(
        &self,
        build: &Path,
        out: &Path,
        extra: &[OsString],
        no_memo: bool,
    ) -> Result<(Measured, Manifest)> {
        let mut c = self.pik_command(build, extra);
        c.arg("--out").arg(out);
        if no_memo {
            c.arg("--no-memo");
        }
        let m = measure::run(&mut c, "pik build", None)?;
        let man = Manifest::read(&crate::output::manifest_path(out))?;
        if man.memo.as_ref().is_none_or(|r| !r.hit) && man.cache.is_some() {
            // A whole build went through the store: a warm build may use it now.
            self.mark_filled(STORE)?;
        }
        Ok((m, man))
    }

    fn pik_command(&self, build: &Path, extra: &[OsString]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("build")
            .args(&self.build_args)
            .arg("--build-dir")
            .arg(build)
            .args(extra)
            .env("PIK_CACHE_DIR", &self.cache_dir)
            .env("PIK_OBJECT_CACHE_DIR", self.store(STORE))
            .stdout(Stdio::null());
        c
    }

    /// A record of a `pik build` from its manifest.
    fn pik_record(&self, scenario: &str, run: u32, m: &Measured, man: &Manifest) -> Record {
        let mut r = self.record(scenario, run, m, workload_of(man));
        let t = |k: &str| man.timings_s.get(k).copied();
        r.phases_s = Phases {
            source: t("source"),
            patch: t("workspace"),
            config: t("kconfig"),
            compile: t("build"),
            link: None,
            install: t("install"),
            publish: t("output"),
            memo: t("memo"),
        };
        r.make_s = t("build");
        let hit = man.memo.as_ref().is_some_and(|x| x.hit);
        r.memo_hit = Some(hit);
        r.objects_compiled = (!hit).then_some(man.objects_compiled);
        let hits = man.cache.as_ref().map_or(0, |c| c.hits);
        r.jobs.local = if hit {
            0
        } else {
            man.objects_compiled.saturating_sub(hits)
        };
        // A distributed build says where its misses ran (pump jobs are remote ones too).
        if let Some(d) = man
            .cache
            .as_ref()
            .and_then(|c| c.dist.as_ref())
            .filter(|_| !hit)
        {
            r.jobs.remote = d.remote + d.pump;
            r.jobs.fallback = d.fallback;
            r.jobs.local = r.jobs.local.saturating_sub(r.jobs.remote);
        }
        // A memo hit's manifest carries the cache outcome of the build that stored it.
        r.cache = man.cache.as_ref().filter(|_| !hit).map(|c| Cache {
            kind: "pik".into(),
            hits: c.hits,
            misses: c.misses,
            uncacheable: c.uncacheable.clone(),
        });
        r
    }

    /// `cold`: an emptied object store, no memo.
    pub(super) fn cold(&mut self, run: u32) -> Result<Record> {
        self.empty_store(STORE)?;
        let rd = self.run_dir("cold")?;
        let (m, man) = self.pik_build(&rd.build, &rd.out, &[], true)?;
        let mut r = self.pik_record("cold", run, &m, &man);
        // Every compile of a cold build ran: its job log is what `pik plan` replays.
        if let Some(log) = self.keep_jobs_log(&rd, "cold", run) {
            r.notes.push(format!("job log kept: {}", log.display()));
        }
        self.done(rd)?;
        Ok(r)
    }

    /// Copies a run's job log (`<build-dir>/pik-jobs.log`) into the work dir as
    /// `jobs-<scenario>-<run>.log`, for `pik plan --log`; None when the build wrote none.
    fn keep_jobs_log(&self, rd: &RunDir, scenario: &str, run: u32) -> Option<PathBuf> {
        let kept = self.dir.join(format!("jobs-{scenario}-{run}.log"));
        std::fs::copy(rd.build.join("pik-jobs.log"), &kept).ok()?;
        Some(kept)
    }

    /// `warm`: a fresh build dir on the store a cold build filled (filled first, untimed, when
    /// no cold build did), the store's pages set as `--store-pages` says; no memo.
    pub(super) fn warm(&mut self, run: u32) -> Result<Record> {
        let mut notes = Vec::new();
        if !self.store_filled(STORE) {
            eprintln!("pik bench: the object store is empty: filling it first (untimed)");
            self.empty_store(STORE)?;
            let rd = self.run_dir("warm-fill")?;
            self.pik_build(&rd.build, &rd.out, &[], true)?;
            self.done(rd)?;
            notes.push("the object store was filled by an untimed cold build first".into());
        }
        self.opt.store_pages.apply(&self.store(STORE));
        let rd = self.run_dir("warm")?;
        let (m, man) = self.pik_build(&rd.build, &rd.out, &[], true)?;
        let mut r = self.pik_record("warm", run, &m, &man);
        r.store_pages = Some(self.opt.store_pages.to_string());
        r.notes = notes;
        self.done(rd)?;
        Ok(r)
    }

    /// `memo`: the same inputs again, memo on. Any earlier `pik build` of them stored the
    /// entry; when none did, the first build (untimed) stores it and a second is measured.
    pub(super) fn memo(&mut self, run: u32) -> Result<Record> {
        let mut notes = Vec::new();
        let mut build = || -> Result<(Measured, Manifest)> {
            let rd = self.run_dir("memo")?;
            let built = self.pik_build(&rd.build, &rd.out, &[], false)?;
            self.done(rd)?;
            Ok(built)
        };
        let (mut m, mut man) = build()?;
        if man.memo.as_ref().is_none_or(|x| !x.hit) {
            eprintln!("pik bench: the memo did not hold this build: it does now; measuring again");
            notes.push("the memo was primed by an untimed build first".into());
            (m, man) = build()?;
        }
        let mut r = self.pik_record("memo", run, &m, &man);
        if r.memo_hit != Some(true) {
            notes.push("not a memo hit: the memo did not keep the entry it was given".into());
        }
        r.notes = notes;
        Ok(r)
    }

    /// `dist`: an emptied store, the build distributed over the configured hosts.
    pub(super) fn dist(&mut self, run: u32) -> Result<Record> {
        let hosts = crate::settings::load()?.hosts()?.value;
        self.empty_store(STORE)?;
        let rd = self.run_dir("dist")?;
        let mut extra: Vec<std::ffi::OsString> = vec!["--hosts".into()];
        extra.extend(hosts.into_iter().map(Into::into));
        let (m, man) = self.pik_build(&rd.build, &rd.out, &extra, true)?;
        let r = self.pik_record("dist", run, &m, &man);
        self.done(rd)?;
        Ok(r)
    }

    /// `edit`: a build kept in its build dir, then rebuilt there with one more module on
    /// (`--set`), then with a patch that changes one driver's .c file; each a record of what
    /// kbuild recompiled and how much of it the cache served.
    pub(super) fn edit(&mut self, run: u32) -> Result<Vec<Record>> {
        let patch = self.edit_patch()?.0.clone();
        let rd = self.run_dir("edit")?;
        let (_, base) = self.pik_build(&rd.build, &rd.root.join("out-base"), &[], true)?;
        let object = rd
            .build
            .join(Path::new(&self.opt.edit_file).with_extension("o"));
        if !object.is_file() {
            bail!(
                "--edit-file {}: this build does not compile it (no {}); name a .c file the \
                 build compiles",
                self.opt.edit_file,
                object.display()
            );
        }
        let set = ["--set".into(), self.opt.edit_set.clone().into()];
        let set = self.edit_build(run, &rd, &base, ("set", &self.opt.edit_set), &set)?;
        let extra = ["--patch".into(), patch.into_os_string()];
        let patch = self.edit_build(run, &rd, &base, ("patch", &self.opt.edit_file), &extra)?;
        self.done(rd)?;
        Ok(vec![set, patch])
    }

    fn edit_build(
        &self,
        run: u32,
        rd: &RunDir,
        base: &Manifest,
        (change, detail): (&str, &str),
        extra: &[OsString],
    ) -> Result<Record> {
        let out = rd.root.join(format!("out-{change}"));
        let (m, man) = self.pik_build(&rd.build, &out, extra, true)?;
        let o = measure::outcome(&rd.build.join("pik-cache.log"));
        let mut r = self.pik_record(&format!("edit-{change}"), run, &m, &man);
        r.workload = workload_of(base);
        let mut compiled = o.compiled;
        compiled.truncate(Edit::LISTED);
        r.edit = Some(Edit {
            change: change.into(),
            detail: detail.into(),
            recompiled: o.summary.hits + o.summary.misses,
            served: o.summary.hits,
            compiled,
            config_blake3: man.config_blake3.clone(),
        });
        Ok(r)
    }

    /// The edit's patch file and the changed file's new bytes (made by the preparation).
    pub(super) fn edit_patch(&self) -> Result<&(PathBuf, Vec<u8>)> {
        self.prep
            .as_ref()
            .and_then(|p| p.edit.as_ref())
            .context("the edit patch was not prepared")
    }

    /// `pik build --config-only` into `<work dir>/<name>` (untimed); returns the build dir.
    fn config_only(&self, name: &str, extra: &[OsString]) -> Result<PathBuf> {
        let build = self.store(name);
        crate::fsutil::remove_tree(&build)?;
        let mut c = self.pik_command(&build, extra);
        c.arg("--config-only");
        measure::run(&mut c, "pik build --config-only", None)?;
        Ok(build)
    }

    /// pik's workspace tree and `.config` for this build (for make and the edits), and, when
    /// edit runs, its patch, checked before any run: it applies and the `--set` survives
    /// Kconfig (a `--config-only` build with both, which also makes the patched workspace).
    pub(super) fn prep_config(&self) -> Result<Prep> {
        let build = self.config_only("prep", &[])?;
        let tree = srctree(&build)?;
        let key = tree
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ws = Workspace {
            tree: tree.clone(),
            key,
            notes: Vec::new(),
        };
        let kbuild = Kbuild::new(&self.plan, &ws, build.clone(), self.jobs, false)?;
        let config = build.join(".config");
        let values = crate::input::kconfig::read_config(&config)?;
        let modules = values.get("MODULES").is_some_and(|v| v == "y");
        let workload = Workload {
            target: self.plan.target.name.clone(),
            profile: self.plan.profile.clone(),
            kernel_version: crate::input::source::kernel_version(&tree)?,
            source_blake3: self.plan.source_digest.to_hex().to_string(),
            config_blake3: crate::fsutil::hash_file(&config)?,
        };
        let edit = if self.opt.scenarios.contains(&super::Scenario::Edit) {
            Some(self.prep_edit(&tree, &values)?)
        } else {
            None
        };
        Ok(Prep {
            kbuild,
            config,
            targets: self.plan.make_targets(modules),
            modules,
            workload,
            edit,
        })
    }

    /// Writes the edit patch for `--edit-file` of `tree` and checks the edit with a
    /// `--config-only` build: the patch applies and `--edit-set` is a change that survives.
    fn prep_edit(
        &self,
        tree: &Path,
        config: &std::collections::BTreeMap<String, String>,
    ) -> Result<(PathBuf, Vec<u8>)> {
        let (sym, value) = self.opt.edit_set.split_once('=').unwrap_or_default();
        let sym = sym.trim_start_matches("CONFIG_");
        if config.get(sym).is_some_and(|v| v == value || v == "y") {
            bail!(
                "--edit-set {}: the build already has CONFIG_{sym}={}; name a module it leaves off",
                self.opt.edit_set,
                config[sym]
            );
        }
        let rel = &self.opt.edit_file;
        let old = std::fs::read_to_string(tree.join(rel))
            .with_context(|| format!("--edit-file {rel}: not a text file of the kernel tree"))?;
        let (patch, new) = edit_patch(rel, &old)?;
        let file = self.store("edit.patch");
        std::fs::write(&file, patch).with_context(|| format!("writing {}", file.display()))?;
        eprintln!("pik bench: checking the edit (pik build --config-only --patch --set)");
        let extra = [
            "--patch".into(),
            file.clone().into_os_string(),
            "--set".into(),
            self.opt.edit_set.clone().into(),
        ];
        self.config_only("prep-edit", &extra)
            .context("the edit (--edit-file, --edit-set) does not build")?;
        Ok((file, new.into_bytes()))
    }
}

/// The workload a manifest describes.
fn workload_of(m: &Manifest) -> Workload {
    Workload {
        target: m.target.clone(),
        profile: m.profile.clone(),
        kernel_version: m.inputs.kernel_version.clone(),
        source_blake3: m.inputs.source_blake3.clone(),
        config_blake3: m.config_blake3.clone(),
    }
}

/// The source tree a configured build dir builds (kbuild writes `include <srctree>/Makefile`
/// into it).
fn srctree(build: &Path) -> Result<PathBuf> {
    let mk = std::fs::read_to_string(build.join("Makefile"))
        .with_context(|| format!("reading {}/Makefile", build.display()))?;
    let tree = mk
        .lines()
        .find_map(|l| l.strip_prefix("include ")?.strip_suffix("/Makefile"))
        .with_context(|| format!("no srctree in {}/Makefile", build.display()))?;
    std::fs::canonicalize(tree).with_context(|| format!("resolving {tree}"))
}

/// A `-p1` patch that appends [`EDIT_LINE`] to the file `rel` whose text is `old`, with the
/// file's last lines as context, so it applies exactly; and the file's new text.
fn edit_patch(rel: &str, old: &str) -> Result<(String, String)> {
    if !old.ends_with('\n') {
        bail!("--edit-file {rel}: the file does not end with a newline");
    }
    let lines: Vec<&str> = old.split_inclusive('\n').collect();
    let context = &lines[lines.len().saturating_sub(3)..];
    let start = lines.len() - context.len() + 1;
    let mut patch = format!(
        "--- a/{rel}\n+++ b/{rel}\n@@ -{start},{} +{start},{} @@\n",
        context.len(),
        context.len() + 1
    );
    for l in context {
        patch.push(' ');
        patch.push_str(l);
    }
    patch.push('+');
    patch.push_str(EDIT_LINE);
    Ok((patch, format!("{old}{EDIT_LINE}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edit_patch_applies_exactly() {
        let t = tempfile::tempdir().unwrap();
        let old = "int a;\nint b;\nint c;\nint d;\n";
        std::fs::create_dir_all(t.path().join("drivers")).unwrap();
        std::fs::write(t.path().join("drivers/x.c"), old).unwrap();
        let (patch, new) = edit_patch("drivers/x.c", old).unwrap();
        assert!(patch.contains("@@ -2,3 +2,4 @@"), "{patch}");
        let st = Command::new("patch")
            .args(["-p1", "--fuzz=0", "-s"])
            .current_dir(t.path())
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(patch.as_bytes())?;
                c.wait()
            })
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read_to_string(t.path().join("drivers/x.c")).unwrap(),
            new
        );
        assert!(edit_patch("x.c", "no newline").is_err());
        let (p, _) = edit_patch("y.c", "one\n").unwrap();
        assert!(p.contains("@@ -1,1 +1,2 @@"), "{p}");
    }
}
