//! The server's own log: the arbiter's and workers' lifecycle messages
//! (Gunicorn's `errorlog`), on standard error or in a file that `SIGUSR1`
//! reopens, so `logrotate` can move it away.
//!
//! ```
//! turnstile_server::error_log::info(format_args!("booting worker 1"));
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// How serious a message is, as Gunicorn's `loglevel` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail for finding a problem.
    Debug,
    /// Routine events: workers booting, signals handled.
    Info,
    /// Something went wrong and was handled.
    Warning,
    /// Something failed.
    Error,
    /// A process stops or is killed.
    Critical,
}

impl Level {
    /// The name in a log line: `INFO`, `WARNING`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warning => "WARNING",
            Self::Error => "ERROR",
            Self::Critical => "CRITICAL",
        }
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warning" | "warn" => Ok(Self::Warning),
            "error" => Ok(Self::Error),
            "critical" => Ok(Self::Critical),
            _ => Err(format!(
                "unknown log level {text:?}: expected debug, info, warning, error or critical"
            )),
        }
    }
}

/// The least serious level written.
static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Writes messages at `level` and above only.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether a message at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// The file, when there is one; standard error otherwise.
static FILE: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

/// Sends the log to `path` (`-` for standard error), appending.
pub fn to_file(path: &Path) -> io::Result<()> {
    let mut file = FILE.lock().unwrap_or_else(PoisonError::into_inner);
    *file = if path == Path::new("-") {
        None
    } else {
        Some((path.to_owned(), open(path)?))
    };
    Ok(())
}

/// Whether standard output and error go to the log file too.
static CAPTURING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends this process's standard output and error (and so its children's,
/// the workers', and what the application prints) to the log file, as
/// Gunicorn's `capture_output` does; nothing when the log is standard
/// error. A reopen moves them to the new file too.
pub fn capture_output() -> io::Result<()> {
    let file = FILE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, open_file)) = file.as_ref() {
        CAPTURING.store(true, Ordering::Relaxed);
        redirect(open_file)?;
    }
    Ok(())
}

fn redirect(file: &File) -> io::Result<()> {
    let _ = io::stdout().flush();
    nix::unistd::dup2_stdout(file)?;
    nix::unistd::dup2_stderr(file)?;
    Ok(())
}

/// Opens the log file again under its name, after it was moved away.
pub fn reopen() -> io::Result<()> {
    let mut file = FILE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((path, open_file)) = file.as_mut() {
        *open_file = open(path)?;
        if CAPTURING.load(Ordering::Relaxed) {
            redirect(open_file)?;
        }
    }
    Ok(())
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Logs a routine event.
pub fn info(message: fmt::Arguments<'_>) {
    write(Level::Info, message);
}

/// Logs something that went wrong but was handled.
pub fn warning(message: fmt::Arguments<'_>) {
    write(Level::Warning, message);
}

/// Logs something that stops or kills a process.
pub fn critical(message: fmt::Arguments<'_>) {
    write(Level::Critical, message);
}

/// Writes `[date] [pid] [LEVEL] message`, as Gunicorn does, in one write so
/// lines from several processes do not interleave; nothing when `level` is
/// below the one set.
pub fn write(level: Level, message: fmt::Arguments<'_>) {
    if enabled(level) {
        write_unfiltered(level, message);
    }
}

/// Writes a line whatever level is set: for messages another filter has
/// already chosen (the application's `tracing` events under `RUST_LOG`).
pub fn write_unfiltered(level: Level, message: fmt::Arguments<'_>) {
    let line = format!(
        "[{}] [{}] [{}] {message}\n",
        httpdate::fmt_http_date(SystemTime::now()),
        std::process::id(),
        level.as_str()
    );
    let mut file = FILE.lock().unwrap_or_else(PoisonError::into_inner);
    let written = match file.as_mut() {
        Some((_, file)) => file.write_all(line.as_bytes()),
        None => io::stderr().write_all(line.as_bytes()),
    };
    // Nowhere is left to report a failing log; the server goes on.
    drop(written);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_log_file_is_reopened_under_its_name() {
        let dir = std::env::temp_dir().join(format!("turnstile-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("error.log");
        to_file(&path).unwrap();
        info(format_args!("before"));
        std::fs::rename(&path, dir.join("error.log.1")).unwrap();
        reopen().unwrap();
        warning(format_args!("after"));
        to_file(Path::new("-")).unwrap();
        let old = std::fs::read_to_string(dir.join("error.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(
            old.contains("[INFO] before") && !old.contains("after"),
            "{old}"
        );
        assert!(new.contains("[WARNING] after"), "{new}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
