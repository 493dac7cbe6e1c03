//! `appsnap freeze-guard` (hidden): the guard process; see `appsnap::host::guard`.

/// Runs the guard on stdin/stdout; returns its exit status.
pub fn run() -> u8 {
    appsnap::host::guard::run()
}
