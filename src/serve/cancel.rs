//! A request's cancellation token, so that a `408` means exactly "nothing was changed": the
//! timeout may cancel a request only until its write begins to commit, and a write commits
//! only if the request was not cancelled first (one atomic compare-and-swap decides which).

use super::error::{ServeError, ServeResult};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const RUNNING: u8 = 0;
const CANCELLED: u8 = 1;
const COMMITTING: u8 = 2;

#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicU8>);

impl Cancel {
    /// Cancels the request unless its write has begun to commit; true when cancelled (the
    /// caller may answer 408), false when the commit goes ahead (the caller waits for it).
    pub fn cancel(&self) -> bool {
        match self
            .0
            .compare_exchange(RUNNING, CANCELLED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(state) => state == CANCELLED,
        }
    }

    /// Called right before a write's transaction: from here on the request is not cancelled.
    pub fn begin_commit(&self) -> ServeResult<()> {
        match self
            .0
            .compare_exchange(RUNNING, COMMITTING, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Ok(()),
            Err(COMMITTING) => Ok(()),
            Err(_) => Err(ServeError::TimedOut),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) == CANCELLED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_and_commit_exclude_each_other() {
        let c = Cancel::default();
        assert!(c.cancel());
        assert!(c.is_cancelled());
        assert!(matches!(c.begin_commit(), Err(ServeError::TimedOut)));
        let c = Cancel::default();
        c.begin_commit().unwrap();
        assert!(!c.cancel(), "a commit under way is not cancelled");
        assert!(!c.is_cancelled());
        c.begin_commit().unwrap();
    }
}
