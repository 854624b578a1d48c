//! Which instruction sets the kernels use: detected once per process, and capped by the
//! `LECR_ISA` environment variable so that a lower path (what an AVX2 laptop runs) can be
//! tested and measured on a machine that has more.
//!
//! `LECR_ISA` values, lowest first:
//! - `scalar`: portable code only (what the compiler's baseline target gives);
//! - `avx2`: AVX2 + FMA, no VNNI of any kind (Haswell … Comet Lake, AMD Zen 1–4 without
//!   AVX-512 enabled);
//! - `avxvnni`: AVX2 + FMA + AVX-VNNI, the 256-bit `vpdpbusd` (Alder Lake and later clients);
//! - `avx512`: everything the CPU has (AVX-512 F/BW/DQ/VL, and AVX-512 VNNI where present).
//!
//! The float matrix products of the `gemm` crate pick their own instruction set; they use
//! AVX-512 only in builds with lecr's `avx512` cargo feature (on by default), so an AVX2 float
//! baseline on an AVX-512 machine is a build with `--no-default-features` plus `LECR_ISA=avx2`.

use std::sync::OnceLock;

/// An instruction-set level, ordered from lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    AvxVnni,
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses a `LECR_ISA` value.
    pub fn parse(s: &str) -> Result<Isa, String> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("LECR_ISA: `{s}` is not one of scalar, avx2, avxvnni, avx512"))
    }
}

/// What this CPU supports, independent of `LECR_ISA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2_fma: bool,
    pub avx_vnni: bool,
    pub avx512: bool,
    pub avx512_vnni: bool,
}

impl CpuFeatures {
    pub fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = avx2_fma
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq");
            CpuFeatures {
                avx2_fma,
                avx_vnni: avx2_fma && is_x86_feature_detected!("avxvnni"),
                avx512,
                avx512_vnni: avx512 && is_x86_feature_detected!("avx512vnni"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        CpuFeatures {
            avx2_fma: false,
            avx_vnni: false,
            avx512: false,
            avx512_vnni: false,
        }
    }

    /// The highest level the CPU reaches.
    pub fn best(self) -> Isa {
        if self.avx512 {
            Isa::Avx512
        } else if self.avx_vnni {
            Isa::AvxVnni
        } else if self.avx2_fma {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }

    /// Whether code for `isa` can run here.
    pub fn supports(self, isa: Isa) -> bool {
        match isa {
            Isa::Scalar => true,
            Isa::Avx2 => self.avx2_fma,
            Isa::AvxVnni => self.avx_vnni,
            Isa::Avx512 => self.avx512,
        }
    }
}

/// The cap asked for with `LECR_ISA`, if any (an invalid value is an error).
pub fn requested() -> Result<Option<Isa>, String> {
    match std::env::var("LECR_ISA") {
        Ok(v) if !v.trim().is_empty() => Isa::parse(&v).map(Some),
        _ => Ok(None),
    }
}

/// The level the kernels run at: the CPU's best, capped by `LECR_ISA` (checked once). A cap
/// above what the CPU has gives the CPU's best; an invalid value is ignored here (the CLI
/// refuses it at start-up with the accepted values).
pub fn active() -> Isa {
    static ACTIVE: OnceLock<Isa> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let cpu = CpuFeatures::detect();
        let cap = requested().ok().flatten().unwrap_or(Isa::Avx512);
        // The highest level the CPU supports that is not above the cap. (A CPU can have
        // AVX-512 without AVX-VNNI, so levels are checked one by one.)
        Isa::ALL
            .into_iter()
            .rev()
            .find(|&i| i <= cap && cpu.supports(i))
            .unwrap_or(Isa::Scalar)
    })
}

/// One line for logs and bench tables: the active level and the CPU's features.
pub fn describe() -> String {
    let cpu = CpuFeatures::detect();
    let mut has = Vec::new();
    for (on, name) in [
        (cpu.avx2_fma, "AVX2+FMA"),
        (cpu.avx_vnni, "AVX-VNNI"),
        (cpu.avx512, "AVX-512"),
        (cpu.avx512_vnni, "AVX512-VNNI"),
    ] {
        if on {
            has.push(name);
        }
    }
    let cap = match requested() {
        Ok(Some(i)) => format!(", LECR_ISA={}", i.name()),
        _ => String::new(),
    };
    format!(
        "kernels: {} (CPU has {}{cap})",
        active().name(),
        if has.is_empty() {
            "no AVX2".to_string()
        } else {
            has.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_values_are_refused() {
        for i in Isa::ALL {
            assert_eq!(Isa::parse(i.name()), Ok(i));
        }
        assert_eq!(Isa::parse(" AVX2 "), Ok(Isa::Avx2));
        let e = Isa::parse("sse9").unwrap_err();
        assert!(e.contains("sse9") && e.contains("avxvnni"), "{e}");
    }

    #[test]
    fn active_level_is_supported_and_within_the_cap() {
        let cpu = CpuFeatures::detect();
        let a = active();
        assert!(cpu.supports(a));
        if let Ok(Some(cap)) = requested() {
            assert!(a <= cap);
        } else {
            assert_eq!(a, cpu.best());
        }
    }
}
