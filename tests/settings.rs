//! The config file and the command line around it: precedence (flag > env > file > default),
//! errors that name the file and the key, shell completions, `pik cc` help. No kernel builds.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Settings variables a developer's shell might have set.
const SETTINGS_ENV: &[&str] = &[
    "PIK_CONFIG",
    "PIK_CACHE_DIR",
    "PIK_OBJECT_CACHE_DIR",
    "PIK_CACHE_MAX_SIZE",
    "PIK_CACHE_SHARED",
    "PIK_TARGET",
    "PIK_PROFILE",
    "PIK_JOBS",
    "PIK_HOSTS",
    "PIK_REMOTE_CACHE_URL",
];

/// `pik` with no setting from the environment, and `dir` as its XDG config home (so the
/// developer's own config file is never read).
fn pik_in(dir: &Path) -> Command {
    let mut c = pik();
    for v in SETTINGS_ENV {
        c.env_remove(v);
    }
    c.env("XDG_CONFIG_HOME", dir.join("xdg"));
    c
}

/// `pik` reading the config file `text` through `$PIK_CONFIG`; returns the file's path too.
fn with_config(dir: &Path, text: &str) -> (Command, String) {
    let file = dir.join("config.toml");
    std::fs::write(&file, text).unwrap();
    let mut c = pik_in(dir);
    c.env("PIK_CONFIG", &file);
    (c, file.display().to_string())
}

/// `pik config show --json` (plus `args`): the settings object.
fn show(mut c: Command, args: &[&str]) -> Value {
    let out = run_ok(c.args(["config", "show", "--json"]).args(args));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["settings"].clone()
}

fn source(v: &Value, key: &str) -> (Value, String) {
    let s = &v[key];
    (
        s["value"].clone(),
        s["source"].as_str().unwrap().to_string(),
    )
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const CONFIG: &str = r#"
[cache]
dir = "/tmp/pik-settings-test/from-file"
max_size = "2G"

[build]
target = "bcm2711"
profile = "mini"
jobs = 3

[hosts]
list = ["builder1/8", "builder2"]

[remote_cache]
url = "http://127.0.0.1:1"
"#;

#[test]
fn the_file_gives_settings_the_environment_overrides_and_flags_override_both() {
    let t = tempfile::tempdir().unwrap();
    let (c, file) = with_config(t.path(), CONFIG);
    let v = show(c, &[]);
    for (key, value) in [
        ("cache.dir", Value::from("/tmp/pik-settings-test/from-file")),
        ("build.target", Value::from("bcm2711")),
        ("build.profile", Value::from("mini")),
        ("build.jobs", Value::from(3)),
        ("cache.max_size", Value::from(2u64 << 30)),
        ("hosts.list", serde_json::json!(["builder1/8", "builder2"])),
        ("remote_cache.url", Value::from("http://127.0.0.1:1")),
    ] {
        assert_eq!(source(&v, key), (value, "file".into()), "{key}: {v}");
        assert_eq!(v[key]["path"], Value::from(file.as_str()));
    }
    // The object store follows the cache dir when nothing names it.
    assert_eq!(
        source(&v, "cache.objects"),
        (
            Value::from("/tmp/pik-settings-test/from-file/objects"),
            "default".into()
        )
    );

    let (mut c, _) = with_config(t.path(), CONFIG);
    c.env("PIK_CACHE_DIR", "/tmp/pik-settings-test/from-env")
        .env("PIK_TARGET", "rpi5")
        .env("PIK_JOBS", "5")
        .env("PIK_CACHE_MAX_SIZE", "300M");
    let v = show(c, &[]);
    assert_eq!(
        source(&v, "cache.dir"),
        ("/tmp/pik-settings-test/from-env".into(), "env".into())
    );
    assert_eq!(v["cache.dir"]["var"], "PIK_CACHE_DIR");
    assert_eq!(source(&v, "build.target"), ("rpi5".into(), "env".into()));
    assert_eq!(source(&v, "build.jobs"), (5.into(), "env".into()));
    assert_eq!(
        source(&v, "cache.max_size"),
        ((300u64 << 20).into(), "env".into())
    );
    // Untouched by the environment: still the file's.
    assert_eq!(source(&v, "build.profile"), ("mini".into(), "file".into()));

    let (mut c, _) = with_config(t.path(), CONFIG);
    c.env("PIK_CACHE_DIR", "/tmp/pik-settings-test/from-env")
        .env("PIK_TARGET", "rpi5")
        .env("PIK_JOBS", "5");
    let v = show(
        c,
        &[
            "--cache-dir",
            "/tmp/pik-settings-test/from-flag",
            "--target",
            "bcm2712",
            "-j",
            "7",
            "--profile",
            "full",
        ],
    );
    assert_eq!(
        source(&v, "cache.dir"),
        ("/tmp/pik-settings-test/from-flag".into(), "flag".into())
    );
    assert_eq!(v["cache.dir"]["flag"], "--cache-dir");
    assert_eq!(
        source(&v, "build.target"),
        ("bcm2712".into(), "flag".into())
    );
    assert_eq!(source(&v, "build.jobs"), (7.into(), "flag".into()));
    assert_eq!(source(&v, "build.profile"), ("full".into(), "flag".into()));
}

#[test]
fn defaults_apply_when_nothing_is_set_and_the_xdg_file_is_found() {
    let t = tempfile::tempdir().unwrap();
    let mut c = pik_in(t.path());
    c.env("XDG_CACHE_HOME", t.path().join("cache-home"));
    let out = run_ok(c.args(["config", "show", "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config_file"]["present"], false);
    assert_eq!(
        v["config_file"]["path"],
        Value::from(t.path().join("xdg/pik/config.toml").display().to_string())
    );
    let s = &v["settings"];
    let cache = t.path().join("cache-home/pik").display().to_string();
    assert_eq!(source(s, "cache.dir"), (cache.into(), "default".into()));
    assert_eq!(
        source(s, "cache.max_size"),
        ((5u64 << 30).into(), "default".into())
    );
    assert_eq!(source(s, "cache.shared"), (false.into(), "default".into()));
    assert_eq!(source(s, "build.target"), (Value::Null, "default".into()));
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(source(s, "build.jobs"), (cpus.into(), "default".into()));

    // The same file at the XDG location, found without $PIK_CONFIG.
    let xdg = t.path().join("xdg/pik");
    std::fs::create_dir_all(&xdg).unwrap();
    std::fs::write(xdg.join("config.toml"), "[build]\ntarget = \"rpi4\"\n").unwrap();
    let v = show(pik_in(t.path()), &[]);
    assert_eq!(source(&v, "build.target"), ("rpi4".into(), "file".into()));
    // A target named anywhere gives the profile its default.
    assert_eq!(
        source(&v, "build.profile"),
        ("full".into(), "default".into())
    );

    // The text form says where each value came from.
    let mut c = pik_in(t.path());
    c.env("PIK_JOBS", "4");
    let out = run_ok(c.args(["config", "show"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("env PIK_JOBS"), "{text}");
    assert!(
        text.contains(&format!("file {}", xdg.join("config.toml").display())),
        "{text}"
    );
}

#[test]
fn an_unknown_key_is_an_error_naming_the_key_and_the_file() {
    let t = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("colour = true\n", "colour"),
        ("[cache]\nmax_sise = \"5G\"\n", "max_sise"),
        ("[build]\ntarget = \"bcm2712\"\njbos = 2\n", "jbos"),
    ] {
        let (mut c, file) = with_config(t.path(), text);
        let out = run(c.args(["config", "show"]));
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains(key) && err.contains(&file), "{text:?}: {err}");
        assert!(err.contains("unknown field"), "{err}");
    }
}

#[test]
fn a_bad_value_is_an_error_naming_the_file_and_the_key() {
    let t = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[build]\njobs = 0\n", "[build] jobs"),
        ("[cache]\nmax_size = \"lots\"\n", "[cache] max_size"),
        ("[cache]\ndir = \"relative/dir\"\n", "[cache] dir"),
        ("[build]\ntarget = \"bcm9999\"\n", "`target` under [build]"),
        (
            "[build]\ntarget = \"bcm2712\"\nprofile = \"huge\"\n",
            "`profile` under [build]",
        ),
    ] {
        let (mut c, file) = with_config(t.path(), text);
        let out = run(c.args(["config", "show"]));
        assert!(!out.status.success(), "{text:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(key) && err.contains(&file), "{text:?}: {err}");
    }
    // A bad value in the environment names the variable.
    let mut c = pik_in(t.path());
    let out = run(c.env("PIK_JOBS", "0").args(["config", "show"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("$PIK_JOBS"), "{}", stderr(&out));
    // $PIK_CONFIG must name a file that exists.
    let mut c = pik_in(t.path());
    let missing = t.path().join("missing.toml");
    let out = run(c.env("PIK_CONFIG", &missing).args(["config", "show"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&missing.display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_build_without_a_target_anywhere_says_where_to_name_one() {
    let t = tempfile::tempdir().unwrap();
    let out = run(pik_in(t.path()).args(["build", "--source", "/nonexistent"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no target"), "{err}");
    assert!(
        err.contains("--target") && err.contains("PIK_TARGET") && err.contains("[build]"),
        "{err}"
    );
    assert!(
        err.contains(&t.path().join("xdg/pik/config.toml").display().to_string()),
        "{err}"
    );
    // The config file's target is taken, and checked, before any work.
    let (mut c, file) = with_config(t.path(), "[build]\ntarget = \"bcm9999\"\n");
    let out = run(c.args(["build", "--source", "/nonexistent"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("unknown target \"bcm9999\"") && err.contains(&file),
        "{err}"
    );
}

#[test]
fn the_cache_commands_use_the_store_the_config_file_names() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let text = format!(
        "[cache]\ndir = \"{}\"\nmax_size = \"123M\"\n",
        cache.display()
    );
    let (mut c, _) = with_config(t.path(), &text);
    let out = run_ok(c.args(["cache", "stats", "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["dir"],
        Value::from(cache.join("objects").display().to_string())
    );
    assert_eq!(v["max_size"], Value::from(123u64 << 20));
    // --cache-dir beats the file.
    let other = t.path().join("other");
    let (mut c, _) = with_config(t.path(), &text);
    let out = run_ok(
        c.args(["cache", "stats", "--json", "--cache-dir"])
            .arg(&other),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["dir"],
        Value::from(other.join("objects").display().to_string())
    );
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(pik().args(["completions", shell]));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("build") && script.contains("cache"),
            "{shell}: {script}"
        );
        if shell == "bash" {
            let t = tempfile::tempdir().unwrap();
            let f = t.path().join("pik.bash");
            std::fs::write(&f, &script).unwrap();
            let st = Command::new("bash").arg("-n").arg(&f).status().unwrap();
            assert!(st.success(), "bash -n rejects the bash completions");
        }
    }
    assert!(!run(pik().args(["completions", "cmd.exe"])).status.success());
}

#[test]
fn pik_cc_help_is_help_and_pik_cc_alone_is_a_usage_error() {
    let t = tempfile::tempdir().unwrap();
    // A "compiler" named like the option: running it would leave a mark.
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let mark = t.path().join("ran");
    for name in ["--help", "-h"] {
        let f = bin.join(name);
        std::fs::write(&f, format!("#!/bin/sh\ntouch {}\n", mark.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!("{}:{HOST_PATH}", bin.display());
    for flag in ["--help", "-h"] {
        let out = run_ok(pik().env("PATH", &path).args(["cc", flag]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: pik cc <COMPILER>"), "{text}");
        assert!(!mark.exists(), "pik cc {flag} ran a compiler");
    }
    let out = run(pik().env("PATH", &path).arg("cc"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("<COMPILER>") && err.contains("Usage"), "{err}");
    assert!(!mark.exists());
}

#[test]
fn pik_cc_with_a_compiler_reads_no_config_file() {
    // The per-compile path takes its settings from the environment only: even a broken
    // config file does not touch it.
    let t = tempfile::tempdir().unwrap();
    let (mut c, _) = with_config(t.path(), "this is not = = toml\n");
    let out = run_ok(c.args(["cc", "gcc", "--version"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("gcc"));
    let (mut c, _) = with_config(t.path(), "this is not = = toml\n");
    assert!(!run(c.args(["config", "show"])).status.success());
}
