//! Who the workers run as and what mode a Unix socket gets: the value types
//! of gunicorn's `user`, `group` and `umask`, and the look-up of user and
//! group names in the user database (the master's check at start, so a bad
//! name stops the server with exit 2). Dropping the privileges happens in
//! the Python processes (`set_owner_process` in python/ferrocorn_worker.py);
//! the socket's mode and owner are set in `http/listener.rs`.

use super::table::TomlKind;
use super::types::{Scalar, ValueError};
use super::validate::Settings;
use nix::unistd::{Gid, Group, Uid, User};

/// A user or a group: a numeric id or a name, as gunicorn's `validate_user`
/// and `validate_group` take them (all digits is an id, checked against
/// nothing; anything else is a name, looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A uid or gid.
    Id(u32),
    /// A user or group name.
    Name(String),
}

impl Scalar for Account {
    const VALUE_NAME: &'static str = "NAME";
    const EXPECTED: &'static str = "expected a name or a numeric id";
    fn parse(text: &str) -> Result<Self, ValueError> {
        match text.trim() {
            "" => Err(ValueError::Invalid),
            digits if digits.bytes().all(|b| b.is_ascii_digit()) => digits
                .parse()
                .map(Account::Id)
                .map_err(|_| ValueError::Invalid),
            name => Ok(Account::Name(name.to_string())),
        }
    }
    fn render(&self) -> String {
        match self {
            Account::Id(id) => id.to_string(),
            Account::Name(name) => name.clone(),
        }
    }
}

impl Account {
    /// The uid: the number, or the named user's from the user database.
    pub fn uid(&self) -> Result<u32, String> {
        match self {
            Account::Id(id) => Ok(*id),
            Account::Name(name) => match User::from_name(name) {
                Ok(Some(user)) => Ok(user.uid.as_raw()),
                Ok(None) => Err("no such user".to_string()),
                Err(e) => Err(format!("cannot read the user database: {e}")),
            },
        }
    }

    /// The gid: the number, or the named group's from the group database.
    pub fn gid(&self) -> Result<u32, String> {
        match self {
            Account::Id(id) => Ok(*id),
            Account::Name(name) => match Group::from_name(name) {
                Ok(Some(group)) => Ok(group.gid.as_raw()),
                Ok(None) => Err("no such group".to_string()),
                Err(e) => Err(format!("cannot read the group database: {e}")),
            },
        }
    }
}

/// gunicorn's `umask`: a mode mask, written as Python's `int(value, 0)`
/// reads it after gunicorn's `auto_int` turned a leading `0` followed by a
/// digit into `0o` (`022` and `0o22` are 18, so is `18`; `0x12` and `0b10010`
/// too). Only the permission bits count (umask(2) keeps `0o777` of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Umask(pub u32);

impl Umask {
    /// The mode a new socket or file gets from `0o777`: `0o777 & !umask`.
    pub fn mode(self) -> u32 {
        0o777 & !self.0
    }
}

impl Scalar for Umask {
    const VALUE_NAME: &'static str = "INT";
    const EXPECTED: &'static str =
        "expected a non-negative whole number: decimal (18), octal (022 or 0o22) or hex (0x12)";
    const TOML: TomlKind = TomlKind::Integer;
    fn parse(text: &str) -> Result<Self, ValueError> {
        let text = text.trim();
        let text = text.strip_prefix('+').unwrap_or(text).replace('_', "");
        let lower = text.to_ascii_lowercase();
        let (digits, radix) = if let Some(rest) = lower.strip_prefix("0o") {
            (rest, 8)
        } else if let Some(rest) = lower.strip_prefix("0x") {
            (rest, 16)
        } else if let Some(rest) = lower.strip_prefix("0b") {
            (rest, 2)
        } else if lower.len() > 1 && lower.starts_with('0') {
            // auto_int: `0` then a digit is octal (Python 3 alone would refuse it).
            (&lower[1..], 8)
        } else {
            (lower.as_str(), 10)
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return Err(ValueError::Invalid);
        }
        u32::from_str_radix(digits, radix)
            .map(Umask)
            .map_err(|_| ValueError::Invalid)
    }
    fn render(&self) -> String {
        match self.0 {
            0 => "0".to_string(),
            mask => format!("0o{mask:o}"),
        }
    }
    fn as_number(&self) -> Option<u64> {
        Some(u64::from(self.0))
    }
}

impl Settings {
    /// The owner to give what the master creates for the workers (a Unix
    /// socket, the log files), as gunicorn chowns them to its `uid` and
    /// `gid`: `user` and `group`; `None` keeps that part. Validation has
    /// looked the names up already.
    pub fn owner(&self) -> (Option<Uid>, Option<Gid>) {
        (
            self.user
                .as_ref()
                .and_then(|u| u.uid().ok())
                .map(Uid::from_raw),
            self.group
                .as_ref()
                .and_then(|g| g.gid().ok())
                .map(Gid::from_raw),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn umask(text: &str) -> Result<u32, ValueError> {
        Umask::parse(text).map(|m| m.0)
    }

    /// gunicorn's `auto_int` then `int(x, 0)`, checked against gunicorn 27.0.1.
    #[test]
    fn umask_parses_as_gunicorns_command_line_does() {
        for (text, mask) in [
            ("0", 0),
            ("00", 0),
            ("18", 18),
            ("022", 0o22),
            ("0022", 0o22),
            ("0o22", 0o22),
            ("0O22", 0o22),
            ("0o077", 0o77),
            ("077", 0o77),
            ("0x12", 18),
            ("0b10010", 18),
            ("+18", 18),
            (" 0o7_7 ", 0o77),
        ] {
            assert_eq!(umask(text), Ok(mask), "{text}");
        }
        for bad in [
            "",
            "-1",
            "09",
            "0o8",
            "0x",
            "abc",
            "1.5",
            "0o",
            "4294967296",
        ] {
            assert_eq!(umask(bad), Err(ValueError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn umask_renders_canonically_and_gives_the_mode() {
        for mask in [0, 0o22, 0o77, 0o777] {
            let rendered = Umask(mask).render();
            assert_eq!(umask(&rendered), Ok(mask), "{rendered}");
        }
        assert_eq!(Umask(0).render(), "0");
        assert_eq!(Umask(18).render(), "0o22");
        assert_eq!(Umask(0).mode(), 0o777);
        assert_eq!(Umask(0o22).mode(), 0o755);
        assert_eq!(Umask(0o77).mode(), 0o700);
        assert_eq!(Umask(0o7777).mode(), 0);
    }

    #[test]
    fn accounts_are_numbers_or_names_as_gunicorns_validators_take_them() {
        assert_eq!(Account::parse("65534"), Ok(Account::Id(65534)));
        assert_eq!(Account::parse("0"), Ok(Account::Id(0)));
        assert_eq!(
            Account::parse(" nobody "),
            Ok(Account::Name("nobody".into()))
        );
        assert_eq!(
            Account::parse("www-data"),
            Ok(Account::Name("www-data".into()))
        );
        // Not all digits: a name (gunicorn's str.isdigit), which will not be found.
        assert_eq!(Account::parse("-1"), Ok(Account::Name("-1".into())));
        assert_eq!(Account::parse(""), Err(ValueError::Invalid));
        assert_eq!(Account::parse("4294967296"), Err(ValueError::Invalid));
        for account in [Account::Id(7), Account::Name("nobody".into())] {
            assert_eq!(Account::parse(&account.render()), Ok(account));
        }
    }

    #[test]
    fn names_are_looked_up_and_ids_are_taken_as_they_are() {
        assert_eq!(Account::Id(12345).uid(), Ok(12345));
        assert_eq!(Account::Id(12345).gid(), Ok(12345));
        assert_eq!(Account::Name("root".into()).uid(), Ok(0));
        assert_eq!(Account::Name("root".into()).gid(), Ok(0));
        let missing = Account::Name("no-such-user-ferrocorn".into());
        assert_eq!(missing.uid(), Err("no such user".to_string()));
        assert_eq!(missing.gid(), Err("no such group".to_string()));
    }
}
