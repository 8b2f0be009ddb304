//! The services behind the gateway.

/// A downstream service, by the name its subjects and registry entries use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Product,
    User,
    Order,
    Payment,
    Notification,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Product,
        Service::User,
        Service::Order,
        Service::Payment,
        Service::Notification,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Product => "product",
            Service::User => "user",
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Notification => "notification",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Position in [`Service::ALL`], for per-service arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indexes_round_trip() {
        for (i, service) in Service::ALL.into_iter().enumerate() {
            assert_eq!(service.index(), i);
            assert_eq!(Service::from_name(service.name()), Some(service));
        }
        assert_eq!(Service::from_name("gateway"), None);
    }
}
