//! The roles an `orthrus serve` process may run. `web` runs in any number
//! of processes at once; each of the others runs in exactly one process at
//! a time, elected through the database (see `cluster/`).

word_enum! {
    /// A role of a server process (stored by its word).
    pub enum ProcessRole ("role") {
        /// The HTTP server: pages, the JSON API, downloads.
        Web => "web",
        /// Fetches inputs and evaluates jobsets; applies declarative specs.
        Evaluator => "evaluator",
        /// The queue runner: builds steps on the machines, records results.
        Queue => "queue",
        /// Delivers events to the notifier plugins.
        Notifier => "notifier",
        /// Publishes successful builds to the binary caches.
        Publisher => "publisher",
        /// GC roots and retention: sits with the store it roots.
        Maintenance => "maintenance",
    }
}

impl<'de> serde::Deserialize<'de> for ProcessRole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ProcessRole, D::Error> {
        let word = String::deserialize(deserializer)?;
        word.parse().map_err(serde::de::Error::custom)
    }
}

impl ProcessRole {
    /// Whether one process at a time runs it (every role but `web`).
    pub fn is_elected(self) -> bool {
        self != ProcessRole::Web
    }
}

/// A set of roles, in the order declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessRoles(u8);

impl ProcessRoles {
    pub fn all() -> ProcessRoles {
        ProcessRole::ALL.iter().copied().collect()
    }

    pub fn contains(self, role: ProcessRole) -> bool {
        self.0 & bit(role) != 0
    }

    pub fn is_all(self) -> bool {
        self == ProcessRoles::all()
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = ProcessRole> {
        ProcessRole::ALL.iter().copied().filter(move |role| self.contains(*role))
    }

    /// The elected roles among them.
    pub fn elected(self) -> impl Iterator<Item = ProcessRole> {
        self.iter().filter(|role| role.is_elected())
    }

    /// Parses `web,queue` (as `--roles` and the `roles` column write it).
    pub fn parse_list(list: &str) -> Result<ProcessRoles, super::UnknownWord> {
        list.split(',').map(str::trim).filter(|word| !word.is_empty()).map(str::parse).collect()
    }
}

fn bit(role: ProcessRole) -> u8 {
    1 << ProcessRole::ALL.iter().position(|r| *r == role).expect("declared")
}

impl FromIterator<ProcessRole> for ProcessRoles {
    fn from_iter<I: IntoIterator<Item = ProcessRole>>(roles: I) -> ProcessRoles {
        ProcessRoles(roles.into_iter().fold(0, |bits, role| bits | bit(role)))
    }
}

impl std::fmt::Display for ProcessRoles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<&str> = self.iter().map(ProcessRole::as_str).collect();
        f.write_str(&words.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_and_prints_back_in_declared_order() {
        let roles = ProcessRoles::parse_list("queue, web").unwrap();
        assert!(roles.contains(ProcessRole::Web) && roles.contains(ProcessRole::Queue));
        assert!(!roles.contains(ProcessRole::Evaluator));
        assert_eq!(roles.to_string(), "web,queue");
        assert_eq!(roles.elected().collect::<Vec<_>>(), vec![ProcessRole::Queue]);
        assert!(ProcessRoles::parse_list(&ProcessRoles::all().to_string()).unwrap().is_all());
    }

    #[test]
    fn an_unknown_role_is_named_with_the_known_ones() {
        let error = ProcessRoles::parse_list("web,builder").unwrap_err();
        assert_eq!(error.word, "builder");
        assert!(error.known.contains("maintenance"), "{error}");
    }
}
