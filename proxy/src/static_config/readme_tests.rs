//! The README's static config examples must load: every ```` ```yaml ```` block in a section
//! whose heading (or an enclosing heading) mentions the static config is read with the same
//! loader as `--config FILE`, so that a README example cannot drift from the format.
//!
//! Blocks are found with a small Markdown reader: ATX (`## …`) and setext headings, fenced
//! blocks opened by ```` ``` ```` or `~~~` (any indentation, as in list items; closed by a fence
//! of the same character at least as long), and `#` lines inside fences, which are not
//! headings. A heading "mentions the static config" when, ignoring case and with `_` and
//! `-` read as spaces, it contains "static config" (so "Static configuration" and
//! `` `static_config` `` count). The info string's first word must be `yaml` or `yml`.

use super::{StaticConfigError, parse_full};

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));

/// A fenced code block of a Markdown text.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    /// The first word of the info string (`yaml` in ```` ```yaml title="x" ````).
    lang: String,
    /// The 1-based line of the opening fence.
    line: usize,
    /// The lines between the fences, without the fence's indentation.
    text: String,
    /// The headings the block is under, outermost first.
    headings: Vec<String>,
}

impl Block {
    fn is_yaml(&self) -> bool {
        self.lang.eq_ignore_ascii_case("yaml") || self.lang.eq_ignore_ascii_case("yml")
    }

    fn is_static_config_example(&self) -> bool {
        self.is_yaml() && self.headings.iter().any(|h| mentions_static_config(h))
    }

    /// The first line that is neither blank nor a comment.
    fn first_content_line(&self) -> &str {
        self.text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or_default()
    }
}

fn mentions_static_config(heading: &str) -> bool {
    heading
        .to_lowercase()
        .replace(['_', '-'], " ")
        .contains("static config")
}

/// An open fence: its character, its length, its indentation and the block so far.
struct Fence {
    mark: char,
    len: usize,
    indent: usize,
    block: Block,
}

/// `(level, text)` of an ATX heading line (`## Text ##`), if it is one.
fn atx_heading(line: &str) -> Option<(usize, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let level = rest.len() - rest.trim_start_matches('#').len();
    let after = &rest[level..];
    if !(1..=6).contains(&level) || !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    let text = after.trim();
    // An optional closing sequence of #s, preceded by a space.
    let unclosed = text.trim_end_matches('#');
    let text = if unclosed.is_empty() || unclosed.ends_with([' ', '\t']) {
        unclosed.trim_end()
    } else {
        text
    };
    Some((level, text.to_owned()))
}

/// The fence character and length of a line that opens or closes a fence, with its
/// indentation and what follows the fence (the info string).
fn fence(line: &str) -> Option<(char, usize, usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    let indent = line.len() - trimmed.len();
    let mark = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = trimmed.len() - trimmed.trim_start_matches(mark).len();
    if len < 3 {
        return None;
    }
    let info = trimmed[len..].trim();
    if mark == '`' && info.contains('`') {
        return None;
    }
    Some((mark, len, indent, info))
}

/// Every fenced block of `markdown`, with the headings it is under.
fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut open: Option<Fence> = None;
    // The previous line, when it is paragraph text that a setext underline would make a
    // heading.
    let mut paragraph: Option<&str> = None;
    let set_heading = |headings: &mut Vec<(usize, String)>, level: usize, text: String| {
        headings.retain(|(l, _)| *l < level);
        headings.push((level, text));
    };
    for (i, line) in markdown.lines().enumerate() {
        if let Some(f) = &mut open {
            let closes = fence(line).is_some_and(|(mark, len, indent, info)| {
                mark == f.mark && len >= f.len && indent <= f.indent.max(3) && info.is_empty()
            });
            if closes {
                blocks.extend(open.take().map(|f| f.block));
            } else {
                let strip = line.len() - line.trim_start_matches(' ').len();
                f.block.text.push_str(&line[strip.min(f.indent)..]);
                f.block.text.push('\n');
            }
            continue;
        }
        if let Some((mark, len, indent, info)) = fence(line) {
            open = Some(Fence {
                mark,
                len,
                indent,
                block: Block {
                    lang: info
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    line: i + 1,
                    text: String::new(),
                    headings: headings.iter().map(|(_, h)| h.clone()).collect(),
                },
            });
            paragraph = None;
            continue;
        }
        if let Some((level, text)) = atx_heading(line) {
            set_heading(&mut headings, level, text);
            paragraph = None;
            continue;
        }
        let underline = line.trim();
        if let Some(text) = paragraph
            && !underline.is_empty()
            && (underline.chars().all(|c| c == '=') || underline.chars().all(|c| c == '-'))
            && line.len() - line.trim_start().len() <= 3
        {
            let level = if underline.starts_with('=') { 1 } else { 2 };
            set_heading(&mut headings, level, text.trim().to_owned());
            paragraph = None;
            continue;
        }
        paragraph = (!line.trim().is_empty()).then_some(line);
    }
    // An unclosed fence runs to the end of the document.
    blocks.extend(open.map(|f| f.block));
    blocks
}

fn numbered(block: &Block) -> String {
    block
        .text
        .lines()
        .enumerate()
        .map(|(k, l)| format!("{:>5} | {l}\n", block.line + 1 + k))
        .collect()
}

#[test]
fn readme_static_config_examples_load() {
    let blocks = fenced_blocks(README);
    let examples: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.is_static_config_example())
        .collect();
    if examples.is_empty() {
        let elsewhere: Vec<String> = blocks
            .iter()
            .filter(|b| b.is_yaml() && b.first_content_line().starts_with("listeners:"))
            .map(|b| {
                format!(
                    "line {} (under {:?})",
                    b.line,
                    b.headings.last().map_or("no heading", String::as_str)
                )
            })
            .collect();
        panic!(
            "README.md has no ```yaml block under a heading that mentions the static config \
             (e.g. \"### Static config\"), so none of its examples is checked. Put the static \
             config examples in such a section.{}",
            if elsewhere.is_empty() {
                String::new()
            } else {
                format!(
                    " Yaml blocks starting with `listeners:` outside such a section: {}.",
                    elsewhere.join(", ")
                )
            }
        );
    }
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|b| {
            let origin = format!("README.md (the yaml block opened at line {})", b.line);
            parse_full(&b.text, &origin).err().map(|e| {
                let readme_line = match &e {
                    StaticConfigError::Yaml { line: Some(l), .. } => {
                        format!(" (README.md line {})", b.line + l)
                    }
                    _ => String::new(),
                };
                format!("{}{e}{readme_line}", numbered(b))
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of the README's {} static config example(s) do not load (README line numbers):\n\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n\n")
    );
}

#[test]
fn blocks_are_found_under_static_config_headings() {
    let markdown = "\
# Project

```yaml
outside: 1
```

## The static configuration

Text.

```yaml
listeners: []
# not a heading
```

### HTTP

  ~~~yml title=\"http\"
  listeners: [a]
  ```
  still inside
  ~~~~

```sh
# a shell comment, not a heading
```

```yaml
clusters: []
``````

Other
-----

```yaml
after: setext
```

### `static_config::reference()`

```YAML {.numberLines}
last: true
";
    let blocks = fenced_blocks(markdown);
    let view: Vec<(usize, &str, bool, &str)> = blocks
        .iter()
        .map(|b| {
            (
                b.line,
                b.lang.as_str(),
                b.is_static_config_example(),
                b.text.as_str(),
            )
        })
        .collect();
    assert_eq!(
        view,
        [
            (3, "yaml", false, "outside: 1\n"),
            (11, "yaml", true, "listeners: []\n# not a heading\n"),
            (18, "yml", true, "listeners: [a]\n```\nstill inside\n"),
            (24, "sh", false, "# a shell comment, not a heading\n"),
            (28, "yaml", true, "clusters: []\n"),
            (35, "yaml", false, "after: setext\n"),
            (41, "YAML", true, "last: true\n"),
        ]
    );
    assert_eq!(
        blocks[2].headings,
        ["Project", "The static configuration", "HTTP"]
    );
    assert_eq!(blocks[5].headings, ["Project", "Other"]);
    assert_eq!(blocks[1].first_content_line(), "listeners: []");
}

#[test]
fn atx_headings() {
    let cases = [
        ("# A", Some((1, "A"))),
        ("### Static config ###", Some((3, "Static config"))),
        ("   ## Indented", Some((2, "Indented"))),
        ("##", Some((2, ""))),
        ("## C#", Some((2, "C#"))),
        ("    # code", None),
        ("#hashtag", None),
        ("####### seven", None),
    ];
    for (line, expected) in cases {
        assert_eq!(
            atx_heading(line),
            expected.map(|(l, t)| (l, t.to_owned())),
            "{line:?}"
        );
    }
}
