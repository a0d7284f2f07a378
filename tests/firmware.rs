//! The boot-partition view of a real mini build.

mod common;

use common::*;

#[test]
fn firmware_view_has_what_the_pi_firmware_reads() {
    for (target, image) in [("bcm2712", "kernel_2712.img"), ("bcm2711", "kernel8.img")] {
        let b = mini_build(target);
        let dir = shared().join(format!("firmware-{target}"));
        let _ = std::fs::remove_dir_all(&dir);
        run_ok(pik().arg("firmware").arg("--from").arg(&b.out).arg(&dir));
        assert_eq!(
            std::fs::read(dir.join(image)).unwrap(),
            std::fs::read(b.out.join("Image")).unwrap(),
            "{target}: the firmware image is the raw Image"
        );
        // The DTBs sit at the top level, where the firmware looks for them.
        for dtb in files_with_suffix(&b.out.join("dtbs/broadcom"), ".dtb") {
            let name = dtb.file_name().unwrap();
            assert_eq!(
                std::fs::read(&dtb).unwrap(),
                std::fs::read(dir.join(name)).unwrap()
            );
        }
        assert!(dir.join("bcm2712-rpi-5-b.dtb").is_file());
        let config = std::fs::read_to_string(dir.join("config.txt")).unwrap();
        assert!(
            config.lines().any(|l| l == format!("kernel={image}")),
            "{config}"
        );
        assert!(config.lines().any(|l| l == "arm_64bit=1"));
        // Mainline has no vc4-kms-v3d-pi5 overlay, so the snippet does not name it.
        assert!(!config.contains("dtoverlay=vc4-kms-v3d-pi5"));
        // The console is a board fact: the Pi 5's debug UART is ttyAMA10, the Pi 3/4 mini-UART
        // ttyS1; an image that boots both names the Pi 5's line in a [pi5] section.
        let pi5_cmdline = if target == "bcm2712" {
            "cmdline.txt"
        } else {
            assert!(
                config.contains("[pi5]\ncmdline=cmdline-pi5.txt\n"),
                "{config}"
            );
            let cmdline = std::fs::read_to_string(dir.join("cmdline.txt")).unwrap();
            assert!(cmdline.contains("console=ttyS1,115200"), "{cmdline}");
            assert!(!cmdline.contains("ttyAMA10"), "{cmdline}");
            "cmdline-pi5.txt"
        };
        let cmdline = std::fs::read_to_string(dir.join(pi5_cmdline)).unwrap();
        assert_eq!(cmdline.lines().count(), 1, "{pi5_cmdline} is one line");
        assert!(
            cmdline.contains("console=ttyAMA10,115200") && cmdline.contains("8250.nr_uarts=11")
        );
    }
    // Not a pik output: a clear error, nothing written.
    let bogus = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let dest = elsewhere.path().join("boot");
    let o = run(pik()
        .arg("firmware")
        .arg("--from")
        .arg(bogus.path())
        .arg(&dest));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("pik output"));
    assert!(!dest.exists());
}
