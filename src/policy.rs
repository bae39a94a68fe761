//! Policies: placeholder until the policy parser lands.
