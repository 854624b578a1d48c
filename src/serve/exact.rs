//! The exact f32 content vectors of one language, in the index's row order, kept in an unnamed
//! file on disk (not in the process's memory): ranking scans the int8 copy
//! ([`crate::kernels::quantized`]) and reads back from here only the rows that can reach a
//! topic's top. The file is created unlinked (`O_TMPFILE`, or created and removed at once), so
//! it disappears with the process, kill -9 included, and is rebuilt from the store at start;
//! the store stays the only durable copy. Reads go through the kernel's page cache, which the
//! kernel may reclaim under memory pressure (a later read then comes from the disk).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub struct ExactRows {
    d: usize,
    n: usize,
    file: File,
}

impl ExactRows {
    /// An empty file of rows of `d` values in `dir`.
    pub fn new_in(dir: &Path, d: usize) -> io::Result<Self> {
        let file = tempfile::tempfile_in(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the exact content vectors' file in {}: {e}", dir.display()),
            )
        })?;
        Ok(ExactRows { d, n: 0, file })
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes on disk.
    pub fn file_bytes(&self) -> u64 {
        (self.n * self.d * 4) as u64
    }

    fn offset(&self, i: usize) -> u64 {
        (i * self.d * 4) as u64
    }

    pub fn push(&mut self, row: &[f32]) -> io::Result<()> {
        self.n += 1;
        let r = self.set(self.n - 1, row);
        if r.is_err() {
            self.n -= 1;
        }
        r
    }

    pub fn set(&mut self, i: usize, row: &[f32]) -> io::Result<()> {
        assert!(i < self.n && row.len() == self.d, "a row of the file");
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.file.write_all_at(&bytes, self.offset(i))
    }

    pub fn row(&self, i: usize) -> io::Result<Vec<f32>> {
        assert!(i < self.n, "a row of the file");
        let mut bytes = vec![0u8; self.d * 4];
        self.file.read_exact_at(&mut bytes, self.offset(i))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Moves the last row into slot `i` (as `Vec::swap_remove`) and shortens the file.
    pub fn swap_remove(&mut self, i: usize) -> io::Result<()> {
        assert!(i < self.n, "a row of the file");
        let last = self.n - 1;
        if i != last {
            let r = self.row(last)?;
            self.set(i, &r)?;
        }
        self.n -= 1;
        self.file.set_len(self.offset(self.n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_leave_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = ExactRows::new_in(dir.path(), 3).unwrap();
        for i in 0..5 {
            x.push(&[i as f32, -0.5, f32::MIN_POSITIVE]).unwrap();
        }
        x.swap_remove(1).unwrap();
        assert_eq!((x.len(), x.file_bytes()), (4, 48));
        assert_eq!(x.row(1).unwrap(), vec![4.0, -0.5, f32::MIN_POSITIVE]);
        assert_eq!(x.row(3).unwrap(), vec![3.0, -0.5, f32::MIN_POSITIVE]);
        // Unnamed: nothing in the folder, while it is open or after.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        drop(x);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let missing = ExactRows::new_in(&dir.path().join("nope"), 3)
            .err()
            .unwrap();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
