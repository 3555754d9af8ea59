//! Terminal escapes and control characters: what a terminal would show of a string, and what it
//! would conceal.
//!
//! The string is played on a small model of a terminal (a grid of cells, no wrapping): SGR
//! attributes (conceal, foreground equal to background), cursor movement, erasing, carriage
//! returns, backspaces, saved and restored cursors, OSC 8 hyperlinks. Every printed character
//! either ends up on the screen or not; the ones that do not, and the hyperlink targets, are the
//! hidden text. Colour that hides nothing hides nothing.

/// How a piece of text was hidden from the person at the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Concealment {
    /// SGR 8 (conceal) or a foreground colour equal to the background.
    Invisible,
    /// Erased (EL/ED), or written over after the cursor was moved up, positioned or restored.
    Erased,
    /// The screen was cleared or reset.
    ClearedScreen,
    /// Written over after a carriage return or backspaces.
    Overwritten,
    /// A hyperlink's target, not shown (its text is).
    LinkTarget,
    /// Inside a device control, privacy or application string (never displayed).
    ControlString,
}

/// One run of hidden text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hidden {
    /// How.
    pub how: Concealment,
    /// The text a terminal would not show (for a link: its target).
    pub text: String,
    /// For a link: the text shown instead.
    pub shown: Option<String>,
}

/// A string as a terminal would render it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// What the terminal shows (escapes applied, concealed text left out).
    pub visible: String,
    /// What the model reads: every printed character in order, escapes removed.
    pub printed: String,
    /// What the terminal would not show.
    pub hidden: Vec<Hidden>,
}

/// True when `s` holds an escape or a control character other than tab, newline and a CR that
/// ends a line (what [`render`] and [`make_visible`] change).
pub fn has_controls(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        (c < 0x20 && c != b'\t' && c != b'\n' && !(c == b'\r' && b.get(i + 1) == Some(&b'\n')))
            || c == 0x7f
    }) || s.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c))
}

/// Replaces each control character (except tab and newline) with its visible Control Pictures
/// symbol (ESC becomes `␛`), so escapes show as text to the user and the model alike.
pub fn make_visible(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' => c,
            '\u{7f}' => '\u{2421}',
            c if (c as u32) < 0x20 => char::from_u32(0x2400 + c as u32).unwrap_or('?'),
            c if ('\u{80}'..='\u{9f}').contains(&c) => '\u{fffd}',
            c => c,
        })
        .collect()
}

#[derive(Clone, Copy, Default, PartialEq)]
struct Style {
    conceal: bool,
    reverse: bool,
    fg: Option<(u8, u8, u8)>,
    bg: Option<(u8, u8, u8)>,
}

impl Style {
    fn invisible(&self) -> bool {
        let (fg, bg) = if self.reverse {
            (self.bg, self.fg)
        } else {
            (self.fg, self.bg)
        };
        self.conceal
            || match (fg, bg) {
                (Some(f), Some(b)) => close(f, b),
                _ => false,
            }
    }

    fn sgr(&mut self, params: &[u16]) {
        let mut i = 0;
        let p = |i: usize| params.get(i).copied().unwrap_or(0);
        if params.is_empty() {
            *self = Style::default();
        }
        while i < params.len() {
            match p(i) {
                0 => *self = Style::default(),
                7 => self.reverse = true,
                27 => self.reverse = false,
                8 => self.conceal = true,
                28 => self.conceal = false,
                n @ 30..=37 => self.fg = Some(basic(n - 30)),
                n @ 90..=97 => self.fg = Some(basic(n - 90 + 8)),
                39 => self.fg = None,
                n @ 40..=47 => self.bg = Some(basic(n - 40)),
                n @ 100..=107 => self.bg = Some(basic(n - 100 + 8)),
                49 => self.bg = None,
                n @ (38 | 48) => {
                    let colour = match p(i + 1) {
                        5 => {
                            i += 2;
                            Some(indexed(p(i)))
                        }
                        2 => {
                            i += 4;
                            Some((byte(p(i - 2)), byte(p(i - 1)), byte(p(i))))
                        }
                        _ => None,
                    };
                    if n == 38 {
                        self.fg = colour;
                    } else {
                        self.bg = colour;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn byte(n: u16) -> u8 {
    u8::try_from(n).unwrap_or(255)
}

/// Colours a reader cannot tell apart on a screen.
fn close(a: (u8, u8, u8), b: (u8, u8, u8)) -> bool {
    a.0.abs_diff(b.0) <= 24 && a.1.abs_diff(b.1) <= 24 && a.2.abs_diff(b.2) <= 24
}

/// xterm's default 16 colours.
fn basic(n: u16) -> (u8, u8, u8) {
    const T: [(u8, u8, u8); 16] = [
        (0, 0, 0),
        (205, 0, 0),
        (0, 205, 0),
        (205, 205, 0),
        (0, 0, 238),
        (205, 0, 205),
        (0, 205, 205),
        (229, 229, 229),
        (127, 127, 127),
        (255, 0, 0),
        (0, 255, 0),
        (255, 255, 0),
        (92, 92, 255),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 255),
    ];
    T[usize::from(n.min(15))]
}

/// The 256-colour palette.
fn indexed(n: u16) -> (u8, u8, u8) {
    match n {
        0..=15 => basic(n),
        16..=231 => {
            let n = n - 16;
            let level = |v: u16| if v == 0 { 0 } else { byte(55 + v * 40) };
            (level(n / 36), level((n / 6) % 6), level(n % 6))
        }
        _ => {
            let g = byte(8 + (n.min(255) - 232) * 10);
            (g, g, g)
        }
    }
}

/// One printed character: where it went and why it is no longer shown.
struct Printed {
    ch: char,
    gone: Option<Concealment>,
}

#[derive(Default)]
struct Screen {
    rows: Vec<Vec<Option<usize>>>,
    row: usize,
    col: usize,
    saved: (usize, usize),
    /// How the cursor got where it is: a later write over text is an overwrite of that kind.
    moved: Option<Concealment>,
    printed: Vec<Printed>,
    style: Style,
    link: Option<(String, usize)>,
    hidden: Vec<Hidden>,
}

impl Screen {
    fn cell(&mut self, row: usize, col: usize) -> &mut Option<usize> {
        if self.rows.len() <= row {
            self.rows.resize_with(row + 1, Vec::new);
        }
        let line = &mut self.rows[row];
        if line.len() <= col {
            line.resize(col + 1, None);
        }
        &mut line[col]
    }

    fn gone(&mut self, id: Option<usize>, how: Concealment) {
        if let Some(id) = id
            && self.printed[id].gone.is_none()
        {
            self.printed[id].gone = Some(how);
        }
    }

    fn print(&mut self, ch: char) {
        let id = self.printed.len();
        let invisible = self.style.invisible();
        self.printed.push(Printed {
            ch,
            gone: invisible.then_some(Concealment::Invisible),
        });
        let how = self.moved.unwrap_or(Concealment::Overwritten);
        let (row, col) = (self.row, self.col);
        let old = self.cell(row, col).replace(id);
        if let Some(old) = old {
            // Written over with the same visible character: nothing is lost to the eye.
            if self.printed[old].ch == ch && !invisible {
                self.printed[old].gone = None;
            } else {
                self.gone(Some(old), how);
            }
        }
        self.col += 1;
    }

    fn erase(&mut self, row: usize, cols: std::ops::Range<usize>, how: Concealment) {
        if let Some(line) = self.rows.get_mut(row) {
            let end = cols.end.min(line.len());
            let ids: Vec<Option<usize>> =
                (cols.start.min(end)..end).map(|c| line[c].take()).collect();
            for id in ids {
                self.gone(id, how);
            }
        }
    }

    fn csi(&mut self, params: &[u16], final_byte: char) {
        let n = || usize::from(params.first().copied().unwrap_or(0).max(1));
        let moved = Some(Concealment::Erased);
        match final_byte {
            'm' => self.style.sgr(params),
            'A' => (self.row, self.moved) = (self.row.saturating_sub(n()), moved),
            'B' | 'E' => self.row += n(),
            'C' => self.col += n(),
            'D' => (self.col, self.moved) = (self.col.saturating_sub(n()), moved),
            'F' => (self.row, self.col, self.moved) = (self.row.saturating_sub(n()), 0, moved),
            'G' => (self.col, self.moved) = (n() - 1, moved),
            'H' | 'f' => {
                let r = usize::from(params.first().copied().unwrap_or(1).max(1)) - 1;
                let c = usize::from(params.get(1).copied().unwrap_or(1).max(1)) - 1;
                (self.row, self.col, self.moved) = (r, c, moved);
            }
            'd' => (self.row, self.moved) = (n() - 1, moved),
            'K' => {
                let row = self.row;
                let cols = match params.first().copied().unwrap_or(0) {
                    0 => self.col..usize::MAX,
                    1 => 0..self.col + 1,
                    _ => 0..usize::MAX,
                };
                self.erase(row, cols, Concealment::Erased);
            }
            'X' => {
                let (row, col) = (self.row, self.col);
                self.erase(row, col..col + n(), Concealment::Erased);
            }
            'J' => {
                let mode = params.first().copied().unwrap_or(0);
                let how = if mode >= 2 {
                    Concealment::ClearedScreen
                } else {
                    Concealment::Erased
                };
                let rows: Vec<usize> = match mode {
                    0 => (self.row + 1..self.rows.len()).collect(),
                    1 => (0..self.row).collect(),
                    _ => (0..self.rows.len()).collect(),
                };
                if mode == 0 {
                    let (row, col) = (self.row, self.col);
                    self.erase(row, col..usize::MAX, how);
                } else if mode == 1 {
                    let (row, col) = (self.row, self.col);
                    self.erase(row, 0..col + 1, how);
                }
                for r in rows {
                    self.erase(r, 0..usize::MAX, how);
                }
                if mode >= 2 {
                    self.hidden.push(Hidden {
                        how: Concealment::ClearedScreen,
                        text: String::new(),
                        shown: None,
                    });
                }
            }
            's' => self.saved = (self.row, self.col),
            'u' => (self.row, self.col, self.moved) = (self.saved.0, self.saved.1, moved),
            _ => {}
        }
    }

    fn osc(&mut self, body: &str) {
        // OSC 8 ; params ; URI — a hyperlink until the next OSC 8 with an empty URI.
        if let Some(rest) = body.strip_prefix("8;") {
            let uri = rest.split_once(';').map_or("", |(_, u)| u);
            if let Some((target, from)) = self.link.take() {
                let shown: String = self.printed[from..].iter().map(|p| p.ch).collect();
                self.hidden.push(Hidden {
                    how: Concealment::LinkTarget,
                    text: target,
                    shown: Some(shown),
                });
            }
            if !uri.is_empty() {
                self.link = Some((uri.to_string(), self.printed.len()));
            }
        }
    }
}

/// Plays `s` on a terminal; see the module documentation.
#[expect(
    clippy::many_single_char_names,
    reason = "a terminal emulator's loop: input, cursor, screen"
)]
pub fn render(s: &str) -> Rendered {
    let mut t = Screen::default();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '\u{1b}' | '\u{9b}' | '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => {
                let kind = if c == '\u{1b}' {
                    let k = chars.get(i).copied().unwrap_or('\0');
                    i += 1;
                    k
                } else {
                    match c {
                        '\u{9b}' => '[',
                        '\u{9d}' => ']',
                        _ => 'P',
                    }
                };
                match kind {
                    '[' => {
                        let start = i;
                        while i < chars.len() && !('\u{40}'..='\u{7e}').contains(&chars[i]) {
                            i += 1;
                        }
                        let body: String = chars[start..i.min(chars.len())].iter().collect();
                        let fin = chars.get(i).copied().unwrap_or('\0');
                        i += 1;
                        let params: Vec<u16> = body
                            .trim_start_matches(['?', '>', '<', '='])
                            .split([';', ':'])
                            .map(|p| p.parse().unwrap_or(0))
                            .collect();
                        let params = if body.is_empty() { vec![] } else { params };
                        t.csi(&params, fin);
                    }
                    ']' | 'P' | 'X' | '^' | '_' => {
                        // A string up to BEL or ST (ESC \ or U+009C).
                        let start = i;
                        while i < chars.len()
                            && chars[i] != '\u{7}'
                            && chars[i] != '\u{9c}'
                            && !(chars[i] == '\u{1b}' && chars.get(i + 1) == Some(&'\\'))
                        {
                            i += 1;
                        }
                        let body: String = chars[start..i].iter().collect();
                        i += match chars.get(i) {
                            Some('\u{1b}') => 2,
                            Some(_) => 1,
                            None => 0,
                        };
                        if kind == ']' {
                            t.osc(&body);
                        } else if !body.trim().is_empty() {
                            t.hidden.push(Hidden {
                                how: Concealment::ControlString,
                                text: body,
                                shown: None,
                            });
                        }
                    }
                    '7' => t.saved = (t.row, t.col),
                    '8' => {
                        (t.row, t.col, t.moved) = (t.saved.0, t.saved.1, Some(Concealment::Erased));
                    }
                    'c' => {
                        t.csi(&[2], 'J');
                        (t.row, t.col) = (0, 0);
                    }
                    // Character set selections take one more character.
                    '(' | ')' | '*' | '+' | '#' | '%' => i += 1,
                    _ => {}
                }
            }
            '\r' if chars.get(i) == Some(&'\n') => {}
            '\r' => (t.col, t.moved) = (0, None),
            '\u{8}' => (t.col, t.moved) = (t.col.saturating_sub(1), None),
            '\n' => (t.row, t.col, t.moved) = (t.row + 1, 0, None),
            '\t' => t.col = (t.col / 8 + 1) * 8,
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) => {}
            c => t.print(c),
        }
    }
    if let Some((target, from)) = t.link.take() {
        let shown: String = t.printed[from..].iter().map(|p| p.ch).collect();
        t.hidden.push(Hidden {
            how: Concealment::LinkTarget,
            text: target,
            shown: Some(shown),
        });
    }
    finish(t)
}

fn finish(mut t: Screen) -> Rendered {
    let mut visible = String::new();
    for (r, line) in t.rows.iter().enumerate() {
        if r > 0 {
            visible.push('\n');
        }
        let text: String = line
            .iter()
            .map(|id| match id {
                Some(id) if t.printed[*id].gone.is_none() => t.printed[*id].ch,
                _ => ' ',
            })
            .collect();
        visible.push_str(text.trim_end());
    }
    let mut printed = String::with_capacity(t.printed.len());
    // Runs of hidden characters, by how they were hidden (a space between two hidden runs of
    // the same kind keeps them together).
    let mut runs: Vec<Hidden> = Vec::new();
    let mut last: Option<(Concealment, usize)> = None;
    for (i, p) in t.printed.iter().enumerate() {
        printed.push(p.ch);
        if let Some(how) = p.gone {
            match (runs.last_mut(), last) {
                (Some(run), Some((h, at))) if h == how && at + 2 >= i => {
                    if at + 1 < i {
                        run.text.push(' ');
                    }
                    run.text.push(p.ch);
                }
                _ => runs.push(Hidden {
                    how,
                    text: p.ch.to_string(),
                    shown: None,
                }),
            }
            last = Some((how, i));
        }
    }
    runs.retain(|h| !h.text.trim().is_empty());
    for r in &mut runs {
        r.text = r.text.trim().to_string();
    }
    t.hidden.extend(runs);
    t.hidden.sort_by_key(|h| h.how);
    Rendered {
        visible,
        printed,
        hidden: t.hidden,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(s: &str) -> Vec<(Concealment, String)> {
        render(s)
            .hidden
            .into_iter()
            .map(|h| (h.how, h.text))
            .collect()
    }

    #[test]
    fn colour_hides_nothing() {
        let r = render("\u{1b}[32m✔\u{1b}[0m 41 passed, \u{1b}[1;31m0 failed\u{1b}[0m");
        assert_eq!(r.visible, "✔ 41 passed, 0 failed");
        assert!(r.hidden.is_empty(), "{:?}", r.hidden);
        assert!(render("\u{1b}[7m NOTE \u{1b}[0m done").hidden.is_empty());
        // A progress line rewritten in place hides no words.
        let r = render("Downloading  10%\rDownloading  50%\rDownloading 100%\nDone.");
        assert_eq!(r.visible, "Downloading 100%\nDone.");
    }

    #[test]
    fn each_way_of_hiding_is_found() {
        assert_eq!(
            hidden("ok\u{1b}[8m secret words\u{1b}[0m"),
            vec![(Concealment::Invisible, "secret words".into())]
        );
        assert_eq!(
            hidden("x\u{1b}[38;5;16m\u{1b}[48;5;16m black on black\u{1b}[0m"),
            vec![(Concealment::Invisible, "black on black".into())]
        );
        assert_eq!(
            hidden("rm -rf ~\n\u{1b}[1A\u{1b}[2K\rAll good."),
            vec![(Concealment::Erased, "rm -rf ~".into())]
        );
        let h = hidden("Send env to x.\u{1b}[2J\u{1b}[HShows disk usage.");
        assert!(
            h.contains(&(Concealment::ClearedScreen, "Send env to x.".into())),
            "{h:?}"
        );
        assert_eq!(
            hidden("Deleting cache...\rCache is up to date.       "),
            vec![(Concealment::Overwritten, "Deleting cache...".into())]
        );
        let r = render(
            "see \u{1b}]8;;https://evil.example/\u{1b}\\https://docs.python.org/\u{1b}]8;;\u{1b}\\ ok",
        );
        assert_eq!(r.visible, "see https://docs.python.org/ ok");
        assert_eq!(r.hidden[0].text, "https://evil.example/");
        assert_eq!(
            r.hidden[0].shown.as_deref(),
            Some("https://docs.python.org/")
        );
        assert_eq!(
            hidden("\u{1b}7Read ~/.netrc.\u{1b}8Shows info.     ")[0],
            (Concealment::Erased, "Read ~/.netrc.".into())
        );
    }

    #[test]
    fn escapes_are_made_visible() {
        assert!(has_controls("a\u{1b}[31mb") && has_controls("a\rb") && !has_controls("a\r\nb\t"));
        assert_eq!(make_visible("a\u{1b}[31mb\u{7}"), "a\u{241b}[31mb\u{2407}");
    }
}
