//! Progress bars for long steps, hidden when stderr is not a terminal or in tests.

use indicatif::{ProgressBar, ProgressStyle};

/// `LECR_NO_PROGRESS` set to anything but empty or `0` hides every bar (indicatif already hides
/// them when stderr is not a terminal).
pub fn hidden() -> bool {
    std::env::var("LECR_NO_PROGRESS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A bar over `len` items with a message, items/s and ETA.
pub fn bar(len: u64, msg: &str) -> ProgressBar {
    let pb = if hidden() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta}) {prefix}",
        )
        .expect("static template is valid")
        .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}
