//! `LECR_ISA` above what the CPU allows: the command runs at the highest level below, and says
//! so once, naming the level asked for, why it is missing and the level that runs.

use lecr::kernels::isa::{CpuFeatures, Isa};
use std::process::Command;

#[test]
fn lecr_isa_amx_without_amx_falls_back_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["synth", "--topics", "20", "--contents", "40", "--out"])
        .arg(dir.path().join("corpus"))
        .env("LECR_ISA", "amx")
        .env("LECR_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("LECR_ISA=amx"))
        .collect();
    let cpu = CpuFeatures::detect();
    if cpu.supports(Isa::Amx) {
        println!("this CPU runs AMX: checked that no fallback is reported");
        assert!(lines.is_empty(), "{stderr}");
    } else {
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        let best = cpu.best().name();
        assert!(
            lines[0].contains(&format!(
                "running the highest level below it that this CPU has, {best}"
            )),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("AMX") || lines[0].contains("permission"),
            "says why: {}",
            lines[0]
        );
    }
    // An unknown level is refused with the accepted ones, before any work.
    let bad = Command::new(env!("CARGO_BIN_EXE_lecr"))
        .args(["synth", "--out"])
        .arg(dir.path().join("never"))
        .env("LECR_ISA", "amx2")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("avx512, amx"));
    assert!(!dir.path().join("never").exists());
}
