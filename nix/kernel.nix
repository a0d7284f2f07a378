# A Raspberry Pi kernel built by pik as the derivation's builder (`pik nix-builder`).
#
#   nix-build nix/kernel.nix --arg pik /path/to/pik \
#     --arg src /usr/src/linux-source-6.12.tar.xz --argstr target bcm2712 --argstr profile mini
#
# Outputs: out (Image, the firmware-named image, System.map, config, dtbs/, lib/modules/<v>/)
# and dev (vmlinux, lib/modules/<v>/build for out-of-tree modules): the layout nixpkgs gives a
# kernel. Without nixpkgs the tools come from the host, reachable in the sandbox through
# sandbox-paths (e.g. `/usr /bin /lib /lib64 /etc/alternatives`); with nixpkgs, put them on
# hostPath from store paths instead. A persistent pik cache can be exposed to the sandbox at
# /var/cache/pik (extra-sandbox-paths), as NixOS does for ccache; it never changes the result.
#
# Distributed compiles: name builders in `hosts` (distcc's syntax, e.g. [ "10.0.0.5/4,lzo,cpp" ]).
# Nix's sandbox gives a build only loopback, so a derivation with hosts sets __noChroot: it needs
# `sandbox = relaxed` (or `false`) in nix.conf, and Nix refuses it under `sandbox = true`. Builders
# must run distccd allowing this machine (--allow) and the same cross compiler; every remote object
# is checked, so the outputs are the same as without hosts (but the derivation, and its store
# path, differ: hosts are one of its attributes).
{ pik                  # the pik binary (a path: Nix copies it into the store)
, src                  # the kernel source: a tarball (.tar.xz/.gz/.bz2/.zst) or a tree
, target ? "bcm2712"   # bcm2712 (Pi 5, 16K pages) or bcm2711/rpi4 (4K pages)
, profile ? "full"     # full, or mini (tinyconfig plus a Pi fragment)
, fragments ? [ ]      # extra Kconfig fragments (paths)
, set ? [ ]            # extra CONFIG_FOO=value settings, applied last
, patches ? [ ]        # extra patches (paths), after the target's series
, nixos ? true         # apply the options NixOS requires of a kernel
, hosts ? [ ]          # distccd builders (distcc's host syntax); none = every compile here
, strictRemote ? false # a builder's failure fails the build instead of compiling here
, hostPath ? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
, system ? builtins.currentSystem
}:
derivation {
  name = "linux-pik-${target}-${profile}";
  inherit system target profile set nixos hosts strictRemote;
  # Builders are on the network, which the sandbox does not give a build.
  __noChroot = hosts != [ ];
  # "${path}" copies a path into the store (structured attributes do not coerce paths).
  builder = "${pik}";
  src = "${src}";
  fragments = map (f: "${f}") fragments;
  patches = map (p: "${p}") patches;
  args = [ "nix-builder" ];
  outputs = [ "out" "dev" ];
  __structuredAttrs = true;
  PATH = hostPath;
  requiredSystemFeatures = [ "big-parallel" ];
}
