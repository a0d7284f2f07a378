//! The Nix expression written beside an output (`<out>.nix`): a kernel package for
//! `boot.kernelPackages = pkgs.linuxPackagesFor (pkgs.callPackage ./<out>.nix { })`.
//!
//! The output tree is imported by content (`builtins.path` with the build's narHash, so a tree
//! that changed since pik built it is refused by Nix), and the package carries what nixpkgs'
//! kernels pass through: version, modDirVersion, the parsed config with its `isYes`/`isModule`/…
//! helpers, features, `target = "Image"`, kernelOlder/kernelAtLeast, and `override`. Modules stay
//! under `$out/lib/modules`, which every NixOS release reads. The config values are written into
//! the file itself, so evaluating them needs neither nixpkgs nor import-from-derivation.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the expression describes.
pub struct Kernel<'a> {
    /// The output tree's directory name (the expression imports `./<name>`).
    pub out_name: &'a str,
    /// Kernel version (`6.12.117`).
    pub version: &'a str,
    /// The modules directory name, `uname -r` (`6.12.117-v8-16k`).
    pub mod_dir_version: &'a str,
    /// The output tree's narHash, SRI form.
    pub nar_hash_sri: &'a str,
    /// Target name, for the package name.
    pub target: &'a str,
    /// The kernel image target (`Image`), nixpkgs' `target`.
    pub image: &'a str,
    /// The kernel's `ARCH`.
    pub arch: &'a str,
    /// `.config` contents.
    pub config: &'a str,
    /// The dev output: a Nix path expression for it, its name and its narHash (SRI).
    pub dev: Option<(String, String, &'a str)>,
}

/// Renders the expression for the published output `out` that `m` describes and writes it to
/// `<out>.nix`.
pub fn write_beside(
    out: &std::path::Path,
    m: &crate::output::manifest::Manifest,
    target: &crate::input::target::Target,
    config: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let dev = match &m.dev {
        Some(d) => {
            let path = std::path::Path::new(&d.path);
            let name = crate::nix::nar::default_name(path)?;
            // Beside the output (the default) it is relative, so the pair can be moved together.
            let expr = if path.parent() == out.parent() {
                format!("./{name}")
            } else {
                format!("(/. + {})", lit(&d.path))
            };
            Some((expr, name, d.nar.sri.as_str()))
        }
        None => None,
    };
    let expr = render(&Kernel {
        out_name: &crate::nix::nar::default_name(out)?,
        version: &m.inputs.kernel_version,
        mod_dir_version: &m.kernelrelease,
        nar_hash_sri: &m.nar.sri,
        target: &target.name,
        image: &target.kernel_image,
        arch: &target.arch,
        config,
        dev,
    });
    let path = crate::output::nix_path(out);
    crate::fsutil::write_atomic(&path, expr.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A Nix string literal.
fn lit(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '$' if chars.peek() == Some(&'{') => o.push_str("\\$"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `CONFIG_FOO=value` lines of a `.config`, values unquoted as nixpkgs' readConfig reads them.
/// Only symbol names a Kconfig can have are kept: the names become attribute names in the
/// expression, and a config file is untrusted input.
pub fn config_values(config: &str) -> BTreeMap<String, String> {
    crate::input::kconfig::values(config)
        .into_iter()
        .filter(|(k, _)| k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'))
        .map(|(k, v)| (format!("CONFIG_{k}"), crate::input::kconfig::unquote(&v)))
        .collect()
}

/// The expression's text.
pub fn render(k: &Kernel) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by pik {} for {} ({}); regenerate it with pik rather than editing it.\n\
         # NixOS: boot.kernelPackages = pkgs.linuxPackagesFor (pkgs.callPackage ./{}.nix {{ }});\n\
         # The tree ./{} is imported by content: Nix refuses it if it no longer matches narHash.",
        env!("CARGO_PKG_VERSION"),
        k.target,
        k.mod_dir_version,
        k.out_name,
        k.out_name
    );
    s.push_str("{ lib, stdenvNoCC ? null, stdenv ? null }:\nlet\n");
    let _ = writeln!(s, "  version = {};", lit(k.version));
    let _ = writeln!(s, "  modDirVersion = {};", lit(k.mod_dir_version));
    let _ = writeln!(s, "  narHash = {};", lit(k.nar_hash_sri));
    s.push_str("  configValues = {\n");
    for (key, v) in config_values(k.config) {
        let _ = writeln!(s, "    {key} = {};", lit(&v));
    }
    s.push_str("  };\n");
    s.push_str(
        r#"  config =
    let
      c = {
        isSet = name: configValues ? "CONFIG_${name}";
        getValue = name: configValues."CONFIG_${name}" or null;
        isYes = name: c.getValue name == "y";
        isNo = name: c.getValue name == "n";
        isModule = name: c.getValue name == "m";
        isEnabled = name: c.isYes name || c.isModule name;
        isDisabled = name: !(c.isSet name) || c.isNo name;
      };
    in
    c // configValues;
"#,
    );
    let _ = writeln!(
        s,
        "  tree = builtins.path {{ path = ./{}; name = {}; sha256 = narHash; }};",
        k.out_name,
        lit(k.out_name)
    );
    match &k.dev {
        Some((path, name, sri)) => {
            let _ = writeln!(
                s,
                "  devTree = builtins.path {{ path = {path}; name = {}; sha256 = {}; }};",
                lit(name),
                lit(sri)
            );
        }
        None => s.push_str("  devTree = null;\n"),
    }
    let _ = writeln!(s, "  pname = {};", lit(&format!("linux-pik-{}", k.target)));
    s.push_str(
        &r#"in
lib.makeOverridable (
  { features ? { efiBootStub = false; netfilterRPFilter = true; ia32Emulation = false; }
  , kernelPatches ? [ ]
  , ...
  }:
  assert kernelPatches == [ ]
    || throw "${pname}: kernelPatches need a rebuild; pass them to pik (--patch) instead";
  let
    passthru = {
      inherit version modDirVersion config features kernelPatches narHash;
      baseVersion = version;
      target = @IMAGE@;
      configfile = "${tree}/config";
      kernelOlder = lib.versionOlder version;
      kernelAtLeast = lib.versionAtLeast version;
      isZen = false;
      isHardened = false;
      isLibre = false;
      isLTS = false;
      withRust = false;
      moduleBuildDependencies = [ ];
      inherit stdenv;
      commonMakeFlags = [ @ARCH@ ];
    };
  in
  if stdenvNoCC == null then
    # Without nixpkgs: the imported trees themselves, with the same attributes.
    passthru // { type = "derivation"; name = "${pname}-${version}"; outPath = "${tree}"; out = tree; }
      // (if devTree != null then { dev = devTree; } else { })
  else
    stdenvNoCC.mkDerivation {
      inherit pname version passthru;
      outputs = [ "out" ] ++ (if devTree != null then [ "dev" ] else [ ]);
      dontUnpack = true;
      dontFixup = true;
      # The bytes exactly as pik built them (modules under $out/lib/modules; what out-of-tree
      # modules build against under $dev/lib/modules/<v>/build).
      installPhase = "cp -a ${tree} $out && chmod -R u+w $out"
        + (if devTree != null then " && cp -a ${devTree} $dev && chmod -R u+w $dev" else "");
    }
) { }
"#
        .replace("@IMAGE@", &lit(k.image))
        .replace("@ARCH@", &lit(&format!("ARCH={}", k.arch))),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_values() {
        assert_eq!(lit(r#"a"b\c${d}$e"#), r#""a\"b\\c\${d}$e""#);
        let v = config_values(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_S=\"x \\\"q\\\"\"\nCONFIG_N=3\n",
        );
        assert_eq!(v["CONFIG_A"], "y");
        assert_eq!(v["CONFIG_S"], "x \"q\"");
        assert_eq!(v["CONFIG_N"], "3");
        assert!(!v.contains_key("CONFIG_B"));
    }
}
