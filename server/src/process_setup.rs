//! What a server process changes about itself: its title in `ps`, its
//! user and group, its environment, where its standard output goes.
//!
//! ```
//! use turnstile_server::process_setup::{group_id, user_id};
//!
//! assert_eq!(user_id("root"), Ok(0));
//! assert_eq!(user_id("0"), Ok(0));
//! assert!(group_id("no-such-group-here").is_err());
//! ```

use std::ffi::CString;
use std::io::{Seek, SeekFrom, Write};

use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};

/// The id of user `name` (a name, or a number as Gunicorn accepts).
pub fn user_id(name: &str) -> Result<u32, String> {
    if let Ok(uid) = name.parse() {
        return Ok(uid);
    }
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("no user named {name:?}")),
        Err(error) => Err(format!("cannot look up the user {name:?}: {error}")),
    }
}

/// The id of group `name` (a name, or a number).
pub fn group_id(name: &str) -> Result<u32, String> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("no group named {name:?}")),
        Err(error) => Err(format!("cannot look up the group {name:?}: {error}")),
    }
}

/// Becomes `group` and then `user` (the group first: a process that is no
/// longer root cannot change it), with no supplementary groups but
/// `group`. Workers do this as they boot, so that the arbiter can bind
/// privileged ports and the application runs unprivileged, as Gunicorn's
/// `user` and `group` do.
pub(crate) fn become_user(user: Option<u32>, group: Option<u32>) -> nix::Result<()> {
    if let Some(gid) = group {
        if Uid::effective().is_root() {
            setgroups(&[Gid::from_raw(gid)])?;
        }
        setgid(Gid::from_raw(gid))?;
    }
    if let Some(uid) = user {
        setuid(Uid::from_raw(uid))?;
    }
    Ok(())
}

/// Sets the title `ps` shows for this process: its command line (`ps aux`,
/// `/proc/PID/cmdline`), as setproctitle does, and its name (`ps -o comm`,
/// 15 bytes at most).
///
/// The command line is rewritten where the kernel keeps it, the memory of
/// `argv`, through `/proc/self/mem`: the title takes the room the original
/// arguments had, cut to fit, and the rest is zeroed, so every argument
/// stays a valid, shorter C string for whatever reads them later (the
/// arbiter keeps its own copy for `USR2`).
pub(crate) fn set_title(title: &str) {
    if let Ok(name) = CString::new(
        title
            .bytes()
            .filter(|b| *b != 0)
            .take(15)
            .collect::<Vec<u8>>(),
    ) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    let _ = rewrite_command_line(title);
}

fn rewrite_command_line(title: &str) -> std::io::Result<()> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold
    // anything: `arg_start` and `arg_end` are fields 48 and 49 (proc(5)).
    let after_name = stat
        .rfind(')')
        .and_then(|at| stat.get(at + 2..))
        .ok_or_else(|| std::io::Error::other("unexpected /proc/self/stat"))?;
    let fields: Vec<&str> = after_name.split(' ').collect();
    let number = |field: usize| -> std::io::Result<u64> {
        fields
            .get(field - 3)
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| std::io::Error::other("no argv bounds in /proc/self/stat"))
    };
    let (start, end) = (number(48)?, number(49)?);
    let room = usize::try_from(end.saturating_sub(start)).unwrap_or(0);
    if room < 2 {
        return Ok(());
    }
    let mut bytes: Vec<u8> = title.bytes().filter(|b| *b != 0).take(room - 1).collect();
    bytes.resize(room, 0);
    let mut memory = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/mem")?;
    memory.seek(SeekFrom::Start(start))?;
    memory.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_and_strangers_do_not() {
        assert_eq!(user_id("root"), Ok(0));
        assert_eq!(user_id("1234"), Ok(1234));
        assert!(
            user_id("no-such-user-here")
                .unwrap_err()
                .contains("no user named")
        );
        assert_eq!(group_id("0"), Ok(0));
    }
}
