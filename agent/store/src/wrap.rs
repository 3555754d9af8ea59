//! Prose (an alert's summary, a call's reason) broken into lines of a table column's width.

/// `s` in lines of at most `width` characters, broken at spaces, inside a word only when a
/// line has no space; never an empty list.
pub(crate) fn wrap(s: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut rest: Vec<char> = s.chars().collect();
    while rest.len() > width {
        // Break at the last space in the line; inside a word only when it has none.
        let cut = (1..=width).rev().find(|&i| rest[i] == ' ').unwrap_or(width);
        lines.push(
            rest[..cut]
                .iter()
                .collect::<String>()
                .trim_end()
                .to_string(),
        );
        let skip = if rest.get(cut) == Some(&' ') {
            cut + 1
        } else {
            cut
        };
        rest.drain(..skip);
    }
    lines.push(rest.into_iter().collect());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_keeps_every_character() {
        let s = "read of ~/.aws/credentials during get_weather, then a connect to 203.0.113.9:443";
        let lines = wrap(s, 24);
        assert!(lines.iter().all(|l| l.chars().count() <= 24), "{lines:?}");
        assert_eq!(lines.join(" "), s);
        assert_eq!(wrap("short", 24), ["short"]);
        let long = "x".repeat(50);
        assert_eq!(wrap(&long, 20).concat(), long);
    }
}
