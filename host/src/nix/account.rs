//! Who the server runs as, in the system's user and group databases
//! (through the C library, so that LDAP and the like are seen as Nix sees
//! them): for build users and `trusted-users`.

use std::ffi::{CStr, CString};

/// The server's own account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub uid: u32,
    /// The user's name, or the uid as text when it has none.
    pub name: String,
    /// Names of the groups it is in (primary and supplementary).
    pub groups: Vec<String>,
}

impl Account {
    pub fn current() -> Account {
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let name = user_name(uid).unwrap_or_else(|| uid.to_string());
        let mut gids = vec![gid];
        gids.extend(supplementary_groups());
        gids.sort_unstable();
        gids.dedup();
        let groups = gids.into_iter().filter_map(group_name).collect();
        Account { uid, name, groups }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether a `trusted-users` (or `allowed-users`) list names this
    /// account: `*`, its name, or `@group` of one of its groups.
    pub fn is_listed_in(&self, list: &[String]) -> bool {
        list.iter().any(|entry| match entry.strip_prefix('@') {
            Some(group) => self.groups.iter().any(|g| g == group),
            None => entry == "*" || *entry == self.name,
        })
    }
}

/// A group's members, if the group exists; an error when the group
/// database could not be read (which says nothing of the group).
pub fn group_members(name: &str) -> std::io::Result<Option<Vec<String>>> {
    let Ok(name) = CString::new(name) else { return Ok(None) };
    with_buffer(
        |group, buffer, result| {
            // SAFETY: every pointer is valid for the call; the buffer's length is given.
            unsafe { libc::getgrnam_r(name.as_ptr(), group, buffer.as_mut_ptr(), buffer.len(), result) }
        },
        |group: &libc::group| {
            let mut members = Vec::new();
            let mut member = group.gr_mem;
            // SAFETY: gr_mem is a NULL-terminated array of C strings in the buffer.
            unsafe {
                while !member.is_null() && !(*member).is_null() {
                    members.push(CStr::from_ptr(*member).to_string_lossy().into_owned());
                    member = member.add(1);
                }
            }
            members
        },
    )
}

fn user_name(uid: u32) -> Option<String> {
    lookup(
        |user: *mut libc::passwd, buffer, result| {
            // SAFETY: as for getgrnam_r.
            unsafe { libc::getpwuid_r(uid, user, buffer.as_mut_ptr(), buffer.len(), result) }
        },
        |user: &libc::passwd| {
            // SAFETY: pw_name points into the buffer, NUL-terminated.
            unsafe { CStr::from_ptr(user.pw_name) }.to_string_lossy().into_owned()
        },
    )
}

fn group_name(gid: u32) -> Option<String> {
    lookup(
        |group: *mut libc::group, buffer, result| {
            // SAFETY: as for getgrnam_r.
            unsafe { libc::getgrgid_r(gid, group, buffer.as_mut_ptr(), buffer.len(), result) }
        },
        |group: &libc::group| {
            // SAFETY: gr_name points into the buffer, NUL-terminated.
            unsafe { CStr::from_ptr(group.gr_name) }.to_string_lossy().into_owned()
        },
    )
}

fn supplementary_groups() -> Vec<u32> {
    // SAFETY: with a zero size, getgroups only counts.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if count <= 0 {
        return Vec::new();
    }
    let mut gids = vec![0; count as usize];
    // SAFETY: the vector holds `count` entries.
    let got = unsafe { libc::getgroups(count, gids.as_mut_ptr()) };
    gids.truncate(got.max(0) as usize);
    gids
}

/// A lookup whose failure only means "no name".
fn lookup<R, T>(
    call: impl FnMut(*mut R, &mut Vec<libc::c_char>, *mut *mut R) -> libc::c_int,
    read: impl FnOnce(&R) -> T,
) -> Option<T> {
    with_buffer(call, read).ok().flatten()
}

/// Calls a `get*_r` function with a buffer that grows while it is too
/// small; `read` turns the record into a value while the buffer lives.
/// `Ok(None)`: no such entry; `Err`: the database could not be read.
/// `R` is a C record (`passwd`, `group`): all zeroes is a valid value.
fn with_buffer<R, T>(
    mut call: impl FnMut(*mut R, &mut Vec<libc::c_char>, *mut *mut R) -> libc::c_int,
    read: impl FnOnce(&R) -> T,
) -> std::io::Result<Option<T>> {
    let mut buffer: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: R is a C record of integers and pointers (see above).
        let mut record: R = unsafe { std::mem::zeroed() };
        let mut result: *mut R = std::ptr::null_mut();
        let status = call(&mut record, &mut buffer, &mut result);
        if status == libc::ERANGE && buffer.len() < 1 << 20 {
            buffer.resize(buffer.len() * 4, 0);
            continue;
        }
        return match (status, result.is_null()) {
            (0, true) => Ok(None),
            (0, false) => Ok(Some(read(&record))),
            (error, _) => Err(std::io::Error::from_raw_os_error(error)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_account_is_named_and_listed_as_nix_lists_users() {
        let me = Account::current();
        assert!(!me.name.is_empty());
        assert!(me.is_listed_in(&["*".into()]));
        assert!(me.is_listed_in(&["nobody-else".into(), me.name.clone()]));
        assert!(!me.is_listed_in(&["nobody-else".into()]));
        if let Some(group) = me.groups.first() {
            assert!(me.is_listed_in(&[format!("@{group}")]));
        }
        assert!(!me.is_listed_in(&["@no-such-group-here".into()]));
    }

    #[test]
    fn groups_are_found_with_their_members_and_missing_ones_are_not() {
        assert!(group_members("root").unwrap().is_some(), "every Unix system has a root group");
        assert_eq!(group_members("orthrus-no-such-group").unwrap(), None);
    }
}
