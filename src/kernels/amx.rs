//! The AMX tile driver shared by the int8 (`tdpbsud`) and bf16 (`tdpbf16ps`) products.
//!
//! A tile is 16 rows × 64 bytes. One tile instruction multiplies an A tile (16 rows of
//! activations, 64 bytes of inputs each: 64 int8 or 32 bf16) by a B tile (16 rows, each one
//! group of 4 bytes of inputs for 16 output columns) and adds the 16 × 16 products into an
//! accumulator tile of i32 (int8) or f32 (bf16). The weight panels of both paths already are B
//! tiles: within a panel of 16 output columns, each group of 4 input bytes (4 int8 or 2 bf16)
//! holds the 16 columns side by side, so 16 groups (64 input bytes) are 1,024 contiguous bytes,
//! exactly one B tile. No second packing is needed.
//!
//! Register use: tmm0–3 accumulate a 32 × 32 block of outputs, tmm4–5 hold two activation tiles
//! (rows `i .. i + 16` and `i + 16 .. i + 32`), tmm6–7 two weight tiles (two panels). Every
//! tile is configured 16 rows × 64 bytes, once per task (`ldtilecfg`), and released at its end
//! (`tilerelease`). Inputs that are not a multiple of 64 bytes, and rows past the last whole
//! 32-row block, are read from zero-padded copies, and the partner of an odd last panel is a
//! zero tile, so the tile loop never changes shape.
//!
//! Stable Rust has no AMX intrinsics (they are nightly-only), so the tile instructions are
//! written with `asm!`. They run only after Linux granted this process the tile state
//! (`kernels::isa::amx_permission`); callers check that through the kernel choice.

use std::arch::asm;

/// Bytes of one tile row.
const ROW_BYTES: usize = 64;
/// Rows of one tile.
pub(crate) const TILE: usize = 16;
/// Bytes of one weight tile.
const B_TILE: usize = TILE * ROW_BYTES;

/// Which tile product runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileOp {
    /// Signed int8 activations × unsigned int8 weights, i32 sums (`tdpbsud`).
    SignedByUnsigned,
    /// bf16 × bf16 pairs, f32 sums (`tdpbf16ps`).
    Bf16,
}

/// The `ldtilecfg` operand (palette 1): tiles 0–7 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// The tiles configured for this thread; released when dropped.
struct Tiles;

impl Tiles {
    /// # Safety
    /// The CPU has AMX-TILE and Linux granted this process the tile state.
    unsafe fn configure() -> Self {
        let mut cfg = TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for t in 0..8 {
            cfg.colsb[t] = ROW_BYTES as u16;
            cfg.rows[t] = TILE as u8;
        }
        asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly));
        Tiles
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: made only by `configure`, so the tiles are in use.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// The four accumulator tiles of one 32 × 32 block, as stored: tile `q` holds rows
/// `16 (q / 2) ..` and panel `q % 2`, each row 16 sums of 32 bits.
pub(crate) type Block = [u32; 4 * TILE * TILE];

/// Expands to the tile loop with the product instruction `$op`: tmm0–3 = the block's sums.
macro_rules! tile_loop {
    ($op:literal, $a0:expr, $a1:expr, $sa:expr, $b0:expr, $b1:expr, $n:expr) => {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            // Each load just before the first product that needs it, so that it overlaps
            // the products already queued (tile registers are not renamed: a load waits for
            // the last product that reads its register).
            "tileloadd tmm4, [{a0} + {sa}*1]",
            "tileloadd tmm6, [{b0} + {sb}*1]",
            concat!($op, " tmm0, tmm4, tmm6"),
            "tileloadd tmm7, [{b1} + {sb}*1]",
            concat!($op, " tmm1, tmm4, tmm7"),
            "tileloadd tmm5, [{a1} + {sa}*1]",
            concat!($op, " tmm2, tmm5, tmm6"),
            concat!($op, " tmm3, tmm5, tmm7"),
            "add {a0}, 64",
            "add {a1}, 64",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {n}",
            "jnz 2b",
            a0 = inout(reg) $a0 => _,
            a1 = inout(reg) $a1 => _,
            b0 = inout(reg) $b0 => _,
            b1 = inout(reg) $b1 => _,
            n = inout(reg) $n => _,
            sa = in(reg) $sa,
            sb = in(reg) ROW_BYTES,
            options(nostack, readonly),
        )
    };
}

/// Starts one 32 × 32 block over `chunks` ≥ 1 chunks of 64 input bytes: A rows at `a0` and
/// 16 rows below (stride `sa`), B tiles at `b0` and `b1` (1,024 bytes per chunk). The sums
/// stay in tmm0–3 until [`store_block`]; in between, the CPU is free to finish the previous
/// block's outputs while the tile unit works on this one (the tile registers are not used by
/// compiled code, so they keep their contents from one `asm!` to the next).
///
/// # Safety
/// Tiles configured; every byte read is inside its buffer.
#[inline]
unsafe fn compute_block(
    op: TileOp,
    a0: *const u8,
    sa: usize,
    b0: *const u8,
    b1: *const u8,
    chunks: usize,
) {
    let a1 = a0.add(TILE * sa);
    match op {
        TileOp::SignedByUnsigned => tile_loop!("tdpbsud", a0, a1, sa, b0, b1, chunks),
        TileOp::Bf16 => tile_loop!("tdpbf16ps", a0, a1, sa, b0, b1, chunks),
    }
}

/// tmm0–3 into `c`.
///
/// # Safety
/// Tiles configured, a block computed.
#[inline]
unsafe fn store_block(c: &mut Block) {
    asm!(
        "tilestored [{c} + {s}*1], tmm0",
        "add {c}, 1024",
        "tilestored [{c} + {s}*1], tmm1",
        "add {c}, 1024",
        "tilestored [{c} + {s}*1], tmm2",
        "add {c}, 1024",
        "tilestored [{c} + {s}*1], tmm3",
        c = inout(reg) c.as_mut_ptr() => _,
        s = in(reg) ROW_BYTES,
        options(nostack),
    )
}

/// The AVX-512 mask of the valid columns among the 16 from `c0` of an `n`-column output.
pub(crate) fn column_mask(n: usize, c0: usize) -> u16 {
    match n.saturating_sub(c0) {
        v if v >= TILE => 0xffff,
        v => (1u16 << v) - 1,
    }
}

/// One task's operands, in bytes.
pub(crate) struct Operands<'a> {
    /// All activation rows, `row_bytes` each (the zero rows that pad them included).
    pub acts: &'a [u8],
    pub row_bytes: usize,
    /// The task's first row and its number of rows.
    pub r0: usize,
    pub rows: usize,
    /// Weight panels of `16 × row_bytes` bytes each.
    pub weights: &'a [u8],
    pub panels: usize,
}

/// The task's rows × all panels on the tiles: `store(block, i, p)` receives each finished
/// 16 × 16 tile of task rows `i .. i + 16` and panel `p` (only those inside the task's rows
/// and the panels), as 32-bit sums (i32 or f32 bits, by `op`), row-major.
///
/// # Safety
/// The CPU has AMX (the tiles and `op`'s instruction) and Linux granted the tile state.
pub(crate) unsafe fn run(op: TileOp, o: Operands, mut store: impl FnMut(&[u32], usize, usize)) {
    let rb = o.row_bytes;
    if rb == 0 || o.rows == 0 || o.panels == 0 {
        return;
    }
    let chunks = rb.div_ceil(ROW_BYTES);
    let kp = chunks * ROW_BYTES;
    let rows32 = o.rows.div_ceil(2 * TILE) * 2 * TILE;
    let have = o.acts.len() / rb;
    // Activations: in place when whole, else from a zero-padded copy.
    let a_copy: Vec<u8>;
    let (a, sa) = if kp == rb && o.r0 + rows32 <= have {
        (o.acts.as_ptr().add(o.r0 * rb), rb)
    } else {
        let mut buf = vec![0u8; rows32 * kp];
        for r in 0..have.saturating_sub(o.r0).min(rows32) {
            let src = &o.acts[(o.r0 + r) * rb..(o.r0 + r + 1) * rb];
            buf[r * kp..r * kp + rb].copy_from_slice(src);
        }
        a_copy = buf;
        (a_copy.as_ptr(), kp)
    };
    // Weights: in place when the inputs are whole chunks, else each panel zero-padded.
    let panel = TILE * rb;
    let w_copy: Vec<u8>;
    let (w, wstride) = if kp == rb {
        (o.weights.as_ptr(), panel)
    } else {
        let mut buf = vec![0u8; o.panels * TILE * kp];
        for p in 0..o.panels {
            let src = &o.weights[p * panel..(p + 1) * panel];
            buf[p * TILE * kp..p * TILE * kp + panel].copy_from_slice(src);
        }
        w_copy = buf;
        (w_copy.as_ptr(), TILE * kp)
    };
    let zeros = if o.panels % 2 == 1 {
        vec![0u8; chunks * B_TILE]
    } else {
        Vec::new()
    };
    let _tiles = Tiles::configure();
    // Two blocks of sums: the one being stored, and the one whose outputs are finished while
    // the tiles compute the next.
    let mut c: [Block; 2] = [[0; 4 * TILE * TILE]; 2];
    let mut pending: Option<(usize, usize, usize)> = None;
    let mut deliver = |c: &Block, i: usize, p: usize| {
        for (q, tile) in c.chunks_exact(TILE * TILE).enumerate() {
            let (ri, pj) = (i + (q / 2) * TILE, p + q % 2);
            if ri < o.rows && pj < o.panels {
                store(tile, ri, pj);
            }
        }
    };
    let mut p = 0;
    let mut next = 0;
    while p < o.panels {
        let b0 = w.add(p * wstride);
        let b1 = if p + 1 < o.panels {
            w.add((p + 1) * wstride)
        } else {
            zeros.as_ptr()
        };
        let mut i = 0;
        while i < o.rows {
            compute_block(op, a.add(i * sa), sa, b0, b1, chunks);
            if let Some((slot, pi, pp)) = pending {
                deliver(&c[slot], pi, pp);
            }
            store_block(&mut c[next]);
            pending = Some((next, i, p));
            next = 1 - next;
            i += 2 * TILE;
        }
        p += 2;
    }
    if let Some((slot, pi, pp)) = pending {
        deliver(&c[slot], pi, pp);
    }
}
