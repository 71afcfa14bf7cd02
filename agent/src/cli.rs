//! Helpers shared by the command-line front ends.

/// Formats an error and its causes on one line, skipping a cause whose text the line
/// already contains (thiserror variants often display their source inline).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !line.contains(&s) {
            line.push_str(": ");
            line.push_str(&s);
        }
        cur = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("disk on fire")]
        Fire,
    }
    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("saving failed: {0}")]
        Save(#[from] Inner),
        #[error("loading failed")]
        Load(#[source] Inner),
    }

    #[test]
    fn chain_skips_repeats_but_keeps_new_causes() {
        assert_eq!(
            super::error_chain(&Outer::Save(Inner::Fire)),
            "saving failed: disk on fire"
        );
        assert_eq!(
            super::error_chain(&Outer::Load(Inner::Fire)),
            "loading failed: disk on fire"
        );
    }
}
