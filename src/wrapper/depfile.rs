//! The files that shaped an object, as they are written down: make-style dependency files as gcc
//! writes them (`target: dep dep \\` continued lines, spaces escaped with a backslash), and the
//! `.incbin` directives in sources and headers, whose files the depfile does not list.

use std::path::PathBuf;

/// Adds `name` unless it is empty or no file: a probe's input (`/dev/null`, stdin).
fn push_file(deps: &mut Vec<PathBuf>, name: Vec<u8>) {
    if !matches!(name.as_slice(), b"" | b"/dev/null" | b"-" | b"<stdin>") {
        deps.push(super::args::path(name));
    }
}

/// The prerequisites of the first rule in `text` (later rules, such as `-MP`'s phony targets,
/// add nothing). Returns `None` when the text is not a depfile.
pub fn prerequisites(text: &[u8]) -> Option<Vec<PathBuf>> {
    // Join continuation lines, then take the first rule.
    let mut joined = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' && text.get(i + 1) == Some(&b'\n') {
            joined.push(b' ');
            i += 2;
        } else {
            joined.push(text[i]);
            i += 1;
        }
    }
    let first = joined.split(|&b| b == b'\n').find(|l| !l.is_empty())?;
    let colon = find_rule_colon(first)?;
    let mut deps = Vec::new();
    let mut cur = Vec::new();
    let mut k = colon + 1;
    let rest = first;
    while k < rest.len() {
        let b = rest[k];
        if b == b'\\' && matches!(rest.get(k + 1), Some(b' ') | Some(b'#') | Some(b'\\')) {
            cur.push(rest[k + 1]);
            k += 2;
            continue;
        }
        if b == b'$' && rest.get(k + 1) == Some(&b'$') {
            cur.push(b'$');
            k += 2;
            continue;
        }
        if b == b' ' || b == b'\t' {
            push_file(&mut deps, std::mem::take(&mut cur));
        } else {
            cur.push(b);
        }
        k += 1;
    }
    push_file(&mut deps, cur);
    Some(deps)
}

/// The colon that ends the target list (a `:` followed by a space or the end of line; escaped
/// spaces belong to the target).
fn find_rule_colon(line: &[u8]) -> Option<usize> {
    (0..line.len()).find(|&i| {
        line[i] == b':'
            && matches!(line.get(i + 1), None | Some(b' ') | Some(b'\t'))
            && (i == 0 || line[i - 1] != b'\\')
    })
}

/// The hash table's attribute for a file: 1 when it mentions `.incbin` anywhere.
pub fn mentions_incbin(text: &[u8]) -> u64 {
    memchr::memmem::find(text, b".incbin").is_some() as u64
}

/// The files named by `.incbin "file"` directives in a source or header (also as they appear
/// inside C `asm()` strings, with escaped quotes). A directive whose operand is not a literal
/// string cannot be followed, so the call is not cacheable.
pub fn incbin_files(text: &[u8]) -> Result<Vec<PathBuf>, &'static str> {
    const NEEDLE: &[u8] = b".incbin";
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(pos) = memchr::memmem::find(&text[i..], NEEDLE) {
        let mut k = i + pos + NEEDLE.len();
        i = k;
        while k < text.len() && (text[k] == b' ' || text[k] == b'\t') {
            k += 1;
        }
        if text.get(k) == Some(&b'\\') {
            k += 1;
        }
        if text.get(k) != Some(&b'"') {
            return Err(".incbin of a computed name");
        }
        k += 1;
        let start = k;
        while k < text.len() && text[k] != b'"' && text[k] != b'\\' && text[k] != b'\n' {
            k += 1;
        }
        found.push(super::args::path(text[start..k].to_vec()));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gcc_depfiles() {
        let d = b"kernel/fork.o: /src/kernel/fork.c /src/include/linux/a.h \\\n  include/generated/b\\ c.h \\\n  x$$y.h\n\n/src/include/linux/a.h:\n";
        let deps = prerequisites(d).unwrap();
        assert_eq!(
            deps,
            vec![
                PathBuf::from("/src/kernel/fork.c"),
                PathBuf::from("/src/include/linux/a.h"),
                PathBuf::from("include/generated/b c.h"),
                PathBuf::from("x$y.h"),
            ]
        );
        assert!(prerequisites(b"no rule here").is_none());
    }

    #[test]
    fn finds_incbin_operands() {
        let c = br#"asm("	.incbin \"kernel/config_data.gz\"	\n");"#;
        assert_eq!(
            incbin_files(c).unwrap(),
            vec![PathBuf::from("kernel/config_data.gz")]
        );
        assert_eq!(
            incbin_files(b"  .incbin \"arch/arm64/kernel/vdso/vdso.so\"\n").unwrap(),
            vec![PathBuf::from("arch/arm64/kernel/vdso/vdso.so")]
        );
        assert!(incbin_files(b".incbin __stringify(INITRAMFS_IMAGE)").is_err());
        assert!(incbin_files(b"no directives").unwrap().is_empty());
        assert_eq!(mentions_incbin(b"x .incbin y"), 1);
        assert_eq!(mentions_incbin(b"incbin"), 0);
    }
}
