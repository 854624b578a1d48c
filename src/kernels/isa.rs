//! Which instruction sets the kernels use: detected once per process, and capped by the
//! `LECR_ISA` environment variable so that a lower path (what an AVX2 laptop runs) can be
//! tested and measured on a machine that has more.
//!
//! `LECR_ISA` values, lowest first:
//! - `scalar`: portable code only (what the compiler's baseline target gives);
//! - `avx2`: AVX2 + FMA, no VNNI of any kind (Haswell … Comet Lake, AMD Zen 1–4 without
//!   AVX-512 enabled);
//! - `avxvnni`: AVX2 + FMA + AVX-VNNI, the 256-bit `vpdpbusd` (Alder Lake and later clients);
//! - `avx512`: AVX-512 F/BW/DQ/VL, and AVX-512 VNNI where present;
//! - `amx`: the matrix units too (AMX-TILE, AMX-INT8, AMX-BF16; Sapphire Rapids and later),
//!   once Linux has granted this process the tile data state (`arch_prctl`
//!   `ARCH_REQ_XCOMP_PERM`): the int8 and bf16 dense products run on the tiles
//!   (`kernels::amx`), everything else on the AVX-512 kernels.
//!
//! A cap above what this CPU (or its kernel) allows runs the highest level below it, with one
//! log line saying why ([`fallback`]).
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
    Amx,
}

impl Isa {
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512, Isa::Amx];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
        }
    }

    /// Parses a `LECR_ISA` value.
    pub fn parse(s: &str) -> Result<Isa, String> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("LECR_ISA: `{s}` is not one of scalar, avx2, avxvnni, avx512, amx")
            })
    }
}

/// What this CPU supports, independent of `LECR_ISA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2_fma: bool,
    pub avx_vnni: bool,
    pub avx512: bool,
    pub avx512_vnni: bool,
    /// AVX512_BF16 (`vdpbf16ps`: pairs of bf16 products into f32; Cooper Lake, Sapphire Rapids,
    /// Zen 4 and later).
    pub avx512_bf16: bool,
    /// AMX-TILE, AMX-INT8 and AMX-BF16 (CPUID; whether Linux lets this process use them is
    /// [`amx_permission`]).
    pub amx: bool,
}

impl CpuFeatures {
    /// The features this CPU has that the kernels use, by their usual names.
    pub fn names(self) -> Vec<&'static str> {
        [
            (self.avx2_fma, "AVX2+FMA"),
            (self.avx_vnni, "AVX-VNNI"),
            (self.avx512, "AVX-512"),
            (self.avx512_vnni, "AVX512-VNNI"),
            (self.avx512_bf16, "AVX512-BF16"),
            (self.amx, "AMX"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    pub fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2_fma = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512 = avx2_fma
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512dq");
            // CPUID leaf 7, sub-leaf 0, EDX: AMX-BF16 bit 22, AMX-TILE 24, AMX-INT8 25 (leaf 7
            // exists on any CPU with AVX-512, checked first).
            let amx = avx512 && {
                let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
                [22, 24, 25].iter().all(|b| edx & (1 << b) != 0)
            };
            CpuFeatures {
                avx2_fma,
                avx_vnni: avx2_fma && is_x86_feature_detected!("avxvnni"),
                avx512,
                avx512_vnni: avx512 && is_x86_feature_detected!("avx512vnni"),
                avx512_bf16: avx512 && is_x86_feature_detected!("avx512bf16"),
                amx,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        CpuFeatures {
            avx2_fma: false,
            avx_vnni: false,
            avx512: false,
            avx512_vnni: false,
            avx512_bf16: false,
            amx: false,
        }
    }

    /// The highest level the CPU reaches.
    pub fn best(self) -> Isa {
        if self.supports(Isa::Amx) {
            Isa::Amx
        } else if self.avx512 {
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
            Isa::Amx => self.amx && amx_permission().is_ok(),
        }
    }

    /// Why `isa` cannot run here (`None`: it can).
    pub fn missing(self, isa: Isa) -> Option<String> {
        match isa {
            _ if isa != Isa::Amx && self.supports(isa) => None,
            Isa::Amx if self.amx => amx_permission().err(),
            Isa::Amx => Some("this CPU has no AMX-TILE/AMX-INT8/AMX-BF16".into()),
            _ => Some(format!("this CPU has no {}", isa.name())),
        }
    }
}

/// Asks Linux, once per process, for the AMX tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`), then checks it was granted (`ARCH_GET_XCOMP_PERM`). Without it a
/// tile instruction kills the process (SIGILL); with it refused, the tiles are not used.
pub fn amx_permission() -> Result<(), String> {
    static GRANTED: OnceLock<Result<(), String>> = OnceLock::new();
    GRANTED
        .get_or_init(|| {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            {
                const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
                const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
                const XFEATURE_XTILEDATA: libc::c_long = 18;
                // SAFETY: arch_prctl with these codes only extends (or, below, reads into
                // `mask`, which outlives the call) this process's permitted XSAVE features.
                let req = unsafe {
                    libc::syscall(
                        libc::SYS_arch_prctl,
                        ARCH_REQ_XCOMP_PERM,
                        XFEATURE_XTILEDATA,
                    )
                };
                if req != 0 {
                    return Err(format!(
                        "Linux refused the AMX tile permission (arch_prctl: {})",
                        std::io::Error::last_os_error()
                    ));
                }
                let mut mask: u64 = 0;
                // SAFETY: as above.
                let got = unsafe {
                    libc::syscall(
                        libc::SYS_arch_prctl,
                        ARCH_GET_XCOMP_PERM,
                        &mut mask as *mut u64,
                    )
                };
                if got != 0 || mask & (1 << XFEATURE_XTILEDATA) == 0 {
                    return Err("Linux did not grant the AMX tile data state".into());
                }
                Ok(())
            }
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            Err("AMX needs Linux on x86_64".into())
        })
        .clone()
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
        let cap = requested().ok().flatten().unwrap_or(Isa::Amx);
        // The highest level the CPU supports that is not above the cap. (A CPU can have
        // AVX-512 without AVX-VNNI, so levels are checked one by one.)
        let level = Isa::ALL
            .into_iter()
            .rev()
            .find(|&i| i <= cap && cpu.supports(i))
            .unwrap_or(Isa::Scalar);
        if let Some(why) = fallback_of(cpu, level) {
            tracing::warn!("{why}");
        }
        level
    })
}

/// Why the active level is below the one `LECR_ISA` asked for (`None`: it is not, or
/// nothing was asked).
pub fn fallback() -> Option<String> {
    fallback_of(CpuFeatures::detect(), active())
}

fn fallback_of(cpu: CpuFeatures, level: Isa) -> Option<String> {
    let asked = requested().ok().flatten()?;
    (asked > level).then(|| {
        let why = cpu
            .missing(asked)
            .unwrap_or_else(|| "it is not available".to_string());
        format!(
            "LECR_ISA={}: {why}; running the highest level below it that this CPU has, {}",
            asked.name(),
            level.name()
        )
    })
}

/// One line for logs and bench tables: the active level and the CPU's features.
pub fn describe() -> String {
    let has = CpuFeatures::detect().names();
    let cap = match (requested(), fallback()) {
        (_, Some(why)) => format!("; {why}"),
        (Ok(Some(i)), None) => format!(", LECR_ISA={}", i.name()),
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
        assert!(e.contains("sse9") && e.contains("amx"), "{e}");
    }

    #[test]
    fn amx_is_the_top_level_and_only_where_the_cpu_and_linux_allow_it() {
        let cpu = CpuFeatures::detect();
        assert_eq!(Isa::ALL.iter().max(), Some(&Isa::Amx));
        match (cpu.amx, amx_permission()) {
            (true, Ok(())) => assert_eq!(cpu.best(), Isa::Amx),
            (has, why) => {
                println!(
                    "AMX not usable here (CPU has AMX: {has}, permission: {why:?}): checked \
                     that it is not chosen"
                );
                assert!(!cpu.supports(Isa::Amx));
                assert_ne!(cpu.best(), Isa::Amx);
                assert!(cpu.missing(Isa::Amx).is_some());
            }
        }
        // Levels the CPU has are never reported missing.
        for i in Isa::ALL {
            assert_eq!(cpu.missing(i).is_none(), cpu.supports(i), "{i:?}");
        }
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
