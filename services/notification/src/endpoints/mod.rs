//! Where notification requests are answered, one file per endpoint: reads of
//! this instance's sled store, which the `NOTIFICATION` stream fills. (What
//! the service writes, it writes from its consumers: [`crate::notifier`].)

pub mod list;

use shop_actors::StateHandle;

/// The notification service's state, shared by every handler.
pub struct Notifications {
    state: StateHandle,
}

impl Notifications {
    /// Reads from `state`, the store the `NOTIFICATION` stream fills.
    pub fn new(state: StateHandle) -> Self {
        Self { state }
    }

    fn tree(&self) -> &sled::Tree {
        self.state.tree()
    }
}
