//! The AVX-VNNI path (`vpdpbusd` on ymm, Alder Lake and later).

ymm_kernel!(
    kernel, "avx2,avxvnni", signed: false, unsigned_x: false,
    |w| w,
    |acc, w, x| _mm256_dpbusd_avx_epi32(acc, w, x)
);
