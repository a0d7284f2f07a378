//! Build hosts in distcc's syntax (distcc's `src/hosts.c`, `man distcc`), as `--hosts`,
//! `$PIK_HOSTS` or the config file's `[hosts] list` give them:
//!
//! ```text
//! localhost[/LIMIT]                              compiles on this machine
//! [USER]@HOST[/LIMIT][:COMMAND][OPTIONS]         ssh [-l USER] HOST COMMAND --inetd
//! HOST[:PORT][/LIMIT][OPTIONS]                   TCP to distccd (port 3632)
//! HOST[/LIMIT][:PORT][OPTIONS]                   (distcc's older order, also accepted)
//! OPTIONS = ,lzo | ,cpp | both                   protocol 2 (LZO), 3 (pump; needs ,lzo)
//! ```
//!
//! HOST is a name, an IPv4 address or a bracketed IPv6 address (`[::1]:3632`). LIMIT is the
//! number of jobs to send at once: 4 per remote host and 2 for localhost unless given. distcc's
//! `,auth` (GSS-API), `,zstd` and `,down`, and the global `--randomize`, `--localslots` and
//! `+zeroconf` are refused with an error that says so, rather than ignored.

use anyhow::Result;
use std::fmt;

/// distccd's TCP port.
pub const DEFAULT_PORT: u16 = 3632;
/// Jobs per remote host when the spec gives no `/LIMIT` (as distcc).
pub const DEFAULT_REMOTE_SLOTS: usize = 4;
/// Jobs on `localhost` when the spec gives no `/LIMIT` (as distcc).
pub const DEFAULT_LOCAL_SLOTS: usize = 2;
/// A `/LIMIT` above this is taken for a typo.
const MAX_SLOTS: usize = 1024;

/// How pik reaches a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `localhost`: compile on this machine, no distccd involved.
    Local,
    /// distccd listening on TCP.
    Tcp {
        /// Host name or address (an IPv6 address without its brackets).
        host: String,
        /// TCP port.
        port: u16,
    },
    /// `ssh [-l USER] HOST COMMAND --inetd`: distccd started per job over SSH.
    Ssh {
        /// Login name; None to let ssh choose (the `@host` form).
        user: Option<String>,
        /// Host name or address, as ssh gets it.
        host: String,
        /// The remote command; None for `distccd`.
        command: Option<String>,
    },
}

/// The distcc protocol version a host speaks, chosen by its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// Preprocessed source and results uncompressed.
    V1 = 1,
    /// As 1, bodies LZO1X-compressed (`,lzo`).
    V2 = 2,
    /// Pump: the builder preprocesses from the sources and headers sent (`,cpp,lzo`).
    V3 = 3,
}

impl Protocol {
    /// The number on the wire.
    pub fn number(self) -> u32 {
        self as u32
    }

    /// Whether bodies are LZO-compressed.
    pub fn compressed(self) -> bool {
        self != Protocol::V1
    }
}

/// One build host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The spec as written (for messages).
    pub spec: String,
    /// How to reach it.
    pub transport: Transport,
    /// How many jobs to send it at once.
    pub slots: usize,
    /// `,lzo`: compress bodies (protocol 2).
    pub lzo: bool,
    /// `,cpp`: preprocess on the builder (protocol 3, pump).
    pub cpp: bool,
}

impl Host {
    /// The protocol its options select: 3 with `,cpp,lzo`, 2 with `,lzo`, else 1.
    pub fn protocol(&self) -> Protocol {
        match (self.lzo, self.cpp) {
            (true, true) => Protocol::V3,
            (true, false) => Protocol::V2,
            _ => Protocol::V1,
        }
    }

    /// A short name for tables and messages: `pi5a`, `pi5a:3633`, `me@pi5a`, `localhost`.
    pub fn name(&self) -> String {
        match &self.transport {
            Transport::Local => "localhost".into(),
            Transport::Tcp { host, port } => {
                let h = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                if *port == DEFAULT_PORT {
                    h
                } else {
                    format!("{h}:{port}")
                }
            }
            Transport::Ssh {
                user: Some(u),
                host,
                ..
            } => format!("{u}@{host}"),
            Transport::Ssh {
                user: None, host, ..
            } => host.clone(),
        }
    }

    /// Whether this entry means "compile here" rather than a builder.
    pub fn is_local(&self) -> bool {
        self.transport == Transport::Local
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Parses a host list: each entry may hold several specs separated by whitespace (as
/// `$PIK_HOSTS` does). An error names the spec it is about.
pub fn parse_hosts<S: AsRef<str>>(entries: &[S]) -> Result<Vec<Host>> {
    entries
        .iter()
        .flat_map(|e| e.as_ref().split_whitespace())
        .map(parse_host)
        .collect()
}

/// Parses one host spec (see the module documentation).
pub fn parse_host(spec: &str) -> Result<Host> {
    parse(spec).map_err(|e| anyhow::anyhow!("host spec {spec:?}: {e}"))
}

fn parse(spec: &str) -> Result<Host, String> {
    if spec.is_empty() || spec.contains(char::is_whitespace) {
        return Err("a host spec is one word, such as pi5a/4,lzo".into());
    }
    if spec.starts_with("--") || spec.starts_with('+') {
        return Err(format!(
            "distcc's global option {spec} is not supported by pik; list hosts only"
        ));
    }
    let mut host = if spec == "localhost" || spec.starts_with("localhost/") {
        parse_local(spec)?
    } else if let Some((user, rest)) = spec.split_once('@') {
        parse_ssh(user, rest)?
    } else {
        parse_tcp(spec)?
    };
    host.spec = spec.to_string();
    Ok(host)
}

fn parse_local(spec: &str) -> Result<Host, String> {
    let mut c = Cursor(&spec["localhost".len()..]);
    let slots = c.limit()?.unwrap_or(DEFAULT_LOCAL_SLOTS);
    c.end("after localhost/LIMIT (localhost takes no port or options)")?;
    Ok(Host {
        spec: String::new(),
        transport: Transport::Local,
        slots,
        lzo: false,
        cpp: false,
    })
}

fn parse_ssh(user: &str, rest: &str) -> Result<Host, String> {
    let user = match user {
        "" => None,
        u => Some(check_user(u)?),
    };
    let mut c = Cursor(rest);
    let host = c.hostname()?;
    let slots = c.limit()?;
    let command = if c.eat(':') {
        Some(check_command(c.take_until(&[',']))?)
    } else {
        None
    };
    let (lzo, cpp) = c.options()?;
    Ok(Host {
        spec: String::new(),
        transport: Transport::Ssh {
            user,
            host,
            command,
        },
        slots: slots.unwrap_or(DEFAULT_REMOTE_SLOTS),
        lzo,
        cpp,
    })
}

fn parse_tcp(spec: &str) -> Result<Host, String> {
    let mut c = Cursor(spec);
    let host = c.hostname()?;
    let mut slots = c.limit()?;
    let port = if c.eat(':') {
        let p = c.take_until(&['/', ',']);
        match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("port {p:?} is not a TCP port (1-65535)")),
        }
    } else {
        DEFAULT_PORT
    };
    if let Some(n) = c.limit()? {
        if slots.is_some() {
            return Err("the /LIMIT is given twice".into());
        }
        slots = Some(n);
    }
    let (lzo, cpp) = c.options()?;
    Ok(Host {
        spec: String::new(),
        transport: Transport::Tcp { host, port },
        slots: slots.unwrap_or(DEFAULT_REMOTE_SLOTS),
        lzo,
        cpp,
    })
}

/// What is left of a spec to parse.
struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    fn eat(&mut self, c: char) -> bool {
        match self.0.strip_prefix(c) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    fn take_until(&mut self, stops: &[char]) -> &'a str {
        let end = self.0.find(stops).unwrap_or(self.0.len());
        let (taken, rest) = self.0.split_at(end);
        self.0 = rest;
        taken
    }

    fn end(&self, what: &str) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected {:?} {what}", self.0))
        }
    }

    /// A host name, or a bracketed IPv6 address (returned without brackets).
    fn hostname(&mut self) -> Result<String, String> {
        if self.eat('[') {
            let addr = self.take_until(&[']']);
            if !self.eat(']') {
                return Err("an IPv6 address needs its closing ']'".into());
            }
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("[{addr}] is not an IPv6 address"));
            }
            return Ok(addr.to_string());
        }
        let name = self.take_until(&['/', ':', ',']);
        check_hostname(name)?;
        Ok(name.to_string())
    }

    /// An optional `/LIMIT` (distcc also takes `=LIMIT`).
    fn limit(&mut self) -> Result<Option<usize>, String> {
        if !(self.eat('/') || self.eat('=')) {
            return Ok(None);
        }
        let n = self.take_until(&[':', ',', '/']);
        match n.parse::<usize>() {
            Ok(v) if (1..=MAX_SLOTS).contains(&v) => Ok(Some(v)),
            _ => Err(format!(
                "limit {n:?} is not a number of jobs (1-{MAX_SLOTS})"
            )),
        }
    }

    /// `,lzo` and `,cpp`; then the spec must end.
    fn options(&mut self) -> Result<(bool, bool), String> {
        let (mut lzo, mut cpp) = (false, false);
        while !self.0.is_empty() {
            if !self.eat(',') {
                return Err(format!("unexpected {:?}", self.0));
            }
            match self.take_until(&[',']) {
                "lzo" => lzo = true,
                "cpp" => cpp = true,
                o if o == "auth" || o.starts_with("auth=") => {
                    return Err(
                        "',auth' (GSS-API authentication) is not supported by pik: reach the \
                         host over SSH (user@host) instead"
                            .into(),
                    )
                }
                o @ ("zstd" | "down") => {
                    return Err(format!("option ',{o}' is not supported by pik"))
                }
                o => return Err(format!("unknown option ',{o}' (pik knows ,lzo and ,cpp)")),
            }
        }
        if cpp && !lzo {
            return Err("pump mode (',cpp') requires compression (',lzo'), as in distcc".into());
        }
        Ok((lzo, cpp))
    }
}

/// A host name or IPv4 address: letters, digits, `.`, `-`, `_`; not starting with `-` (it
/// would be read as an option by ssh).
fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a host name is required".into());
    }
    if name.starts_with('-')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("{name:?} is not a host name or address"));
    }
    Ok(())
}

fn check_user(user: &str) -> Result<String, String> {
    if user.starts_with('-')
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!("{user:?} is not a user name"));
    }
    Ok(user.to_string())
}

fn check_command(cmd: &str) -> Result<String, String> {
    if cmd.is_empty() || cmd.starts_with('-') {
        return Err(format!(
            "{cmd:?} after ':' is not a command (user@host:COMMAND names distccd's path)"
        ));
    }
    Ok(cmd.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(h: &Host) -> (&str, u16) {
        match &h.transport {
            Transport::Tcp { host, port } => (host, *port),
            t => panic!("not tcp: {t:?}"),
        }
    }

    #[test]
    fn tcp_forms() {
        let h = parse_host("pi5a").unwrap();
        assert_eq!(tcp(&h), ("pi5a", 3632));
        assert_eq!((h.slots, h.protocol()), (4, Protocol::V1));
        let h = parse_host("10.0.0.5:3700/8,lzo").unwrap();
        assert_eq!(tcp(&h), ("10.0.0.5", 3700));
        assert_eq!((h.slots, h.protocol()), (8, Protocol::V2));
        assert_eq!(h.name(), "10.0.0.5:3700");
        let h = parse_host("pi5b/3:3633,lzo,cpp").unwrap();
        assert_eq!(tcp(&h), ("pi5b", 3633));
        assert_eq!((h.slots, h.protocol()), (3, Protocol::V3));
        let h = parse_host("[::1]:3632/2").unwrap();
        assert_eq!(tcp(&h), ("::1", 3632));
        assert_eq!(h.name(), "[::1]");
        assert_eq!(h.spec, "[::1]:3632/2");
    }

    #[test]
    fn local_and_ssh() {
        let h = parse_host("localhost").unwrap();
        assert!(h.is_local());
        assert_eq!(h.slots, 2);
        assert_eq!(parse_host("localhost/6").unwrap().slots, 6);
        // localhost with a port is a TCP host, as in distcc.
        assert_eq!(tcp(&parse_host("localhost:3632").unwrap()).0, "localhost");
        let h = parse_host("pi@pi5a/6:/usr/sbin/distccd,lzo").unwrap();
        assert_eq!(
            h.transport,
            Transport::Ssh {
                user: Some("pi".into()),
                host: "pi5a".into(),
                command: Some("/usr/sbin/distccd".into()),
            }
        );
        assert_eq!(
            (h.slots, h.protocol(), h.name().as_str()),
            (6, Protocol::V2, "pi@pi5a")
        );
        let h = parse_host("@pi5a").unwrap();
        assert!(matches!(h.transport, Transport::Ssh { user: None, .. }));
    }

    #[test]
    fn list_splits_whitespace() {
        let l = parse_hosts(&["a/2 b,lzo", "  c  "]).unwrap();
        let names: Vec<_> = l.iter().map(Host::name).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn bad_specs_name_the_spec() {
        for (spec, why) in [
            ("pi5a,cpp", "requires compression"),
            ("pi5a,auth", "not supported"),
            ("pi5a,auth=x", "not supported"),
            ("pi5a,lzz", "unknown option"),
            ("pi5a:http", "not a TCP port"),
            ("pi5a:0", "not a TCP port"),
            ("pi5a/0", "not a number of jobs"),
            ("pi5a/x", "not a number of jobs"),
            ("pi5a/2:3632/3", "given twice"),
            ("-oProxyCommand=x", "not a host name"),
            ("-x@pi5a", "not a user name"),
            ("me@-oProxyCommand=x", "not a host name"),
            ("me@pi5a:-x", "not a command"),
            ("[::1", "closing"),
            ("[nope]:1", "not an IPv6"),
            ("@", "host name is required"),
            ("localhost:x", "not a TCP port"),
            ("localhost/2,lzo", "takes no port"),
            ("--randomize", "not supported"),
            ("+zeroconf", "not supported"),
        ] {
            let e = format!("{:#}", parse_host(spec).unwrap_err());
            assert!(e.contains(&format!("{spec:?}")), "{spec}: {e}");
            assert!(e.contains(why), "{spec}: {e}");
        }
    }
}
