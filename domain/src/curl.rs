//! Reading a `curl` command line (as people paste it from documentation or a browser's "Copy
//! as cURL") into the request a job sends: method, URL, headers and body. The editor fills its
//! fields from it; the job is then validated like any other.

use crate::FieldError;

/// The request a curl command describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurlRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

fn bad(message: impl Into<String>) -> FieldError {
    FieldError::new("url", "invalid_curl", message)
}

/// Splits a shell command line into words: 'single' and "double" quotes, `$'…'` with `\n`/`\t`
/// escapes, backslash escapes and line continuations, as a POSIX shell would for these cases.
fn words(line: &str) -> Result<Vec<String>, FieldError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\n') => {}
                Some('\r') => {
                    if chars.peek() == Some(&'\n') {
                        chars.next();
                    }
                }
                Some(x) => {
                    cur.push(x);
                    in_word = true;
                }
                None => {}
            },
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(bad("a quote (') is not closed")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some('\n') => {}
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err(bad("a quote (\") is not closed")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(bad("a quote (\") is not closed")),
                    }
                }
            }
            '$' if chars.peek() == Some(&'\'') => {
                chars.next();
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => cur.push('\n'),
                            Some('t') => cur.push('\t'),
                            Some('r') => cur.push('\r'),
                            Some(x) => cur.push(x),
                            None => return Err(bad("a quote ($') is not closed")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(bad("a quote ($') is not closed")),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Reads a curl command line. Options that only change how curl itself behaves (`-s`, `-L`,
/// `-v`, `--compressed`, `-o FILE`…) are skipped; ones CronBox cannot honour (uploading a
/// file with `-F`/`-T`, `@file` bodies) are refused with a reason.
pub fn parse(command: &str) -> Result<CurlRequest, FieldError> {
    let w = words(command)?;
    let mut it = w.into_iter();
    match it.next().as_deref() {
        Some("curl") => {}
        _ => return Err(bad("this is not a curl command")),
    }
    let mut req = CurlRequest::default();
    let mut method: Option<String> = None;
    let mut body: Option<String> = None;
    let mut json = false;
    while let Some(arg) = it.next() {
        // `--opt=value` and `-Xvalue` forms.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ if !arg.starts_with("--")
                && arg.chars().count() > 2
                && matches!(arg.chars().nth(1), Some('X' | 'H' | 'd' | 'u'))
                && arg.starts_with('-') =>
            {
                (arg.chars().take(2).collect(), Some(arg.chars().skip(2).collect()))
            }
            _ => (arg.clone(), None),
        };
        let mut take = |name: &str| match &inline {
            Some(v) => Ok(v.clone()),
            None => it.next().ok_or_else(|| bad(format!("{name} needs a value"))),
        };
        match flag.as_str() {
            "-X" | "--request" => method = Some(take("-X")?.to_ascii_uppercase()),
            "-H" | "--header" => {
                let h = take("-H")?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| bad(format!("the header {h:?} has no `:`")))?;
                req.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            "-d" | "--data" | "--data-raw" | "--data-binary" | "--data-ascii" | "--data-urlencode" | "--json" => {
                let d = take(&flag)?;
                if d.starts_with('@') && flag != "--data-raw" {
                    return Err(bad(
                        "a body read from a file (@file) cannot be imported: paste the body itself",
                    ));
                }
                body = Some(match body {
                    Some(b) => format!("{b}&{d}"),
                    None => d,
                });
                json |= flag == "--json";
            }
            "-u" | "--user" => {
                let cred = take("-u")?;
                req.headers
                    .push(("Authorization".into(), format!("Basic {}", base64(cred.as_bytes()))));
            }
            "-A" | "--user-agent" => req.headers.push(("User-Agent".into(), take("-A")?)),
            "-e" | "--referer" => req.headers.push(("Referer".into(), take("-e")?)),
            "-b" | "--cookie" => req.headers.push(("Cookie".into(), take("-b")?)),
            "--url" => req.url = take("--url")?,
            "-G" | "--get" => method = Some("GET".into()),
            "-I" | "--head" => method = Some("HEAD".into()),
            "-F" | "--form" | "-T" | "--upload-file" => {
                return Err(bad("file uploads (-F, -T) cannot be imported"));
            }
            "-o" | "--output" | "-m" | "--max-time" | "--connect-timeout" | "--retry" | "-w" | "--write-out"
            | "--proxy" | "-x" | "--resolve" | "--cacert" | "--cert" | "--key" | "-c" | "--cookie-jar" => {
                take(&flag)?;
            }
            f if f.starts_with('-') => {} // curl's own behaviour: -s, -S, -L, -k, -v, -i, --compressed…
            _ if req.url.is_empty() => req.url = arg,
            _ => return Err(bad("the command names more than one URL")),
        }
    }
    if req.url.is_empty() {
        return Err(bad("the curl command has no URL"));
    }
    let has = |req: &CurlRequest, name: &str| req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if json {
        if !has(&req, "content-type") {
            req.headers.push(("Content-Type".into(), "application/json".into()));
        }
        if !has(&req, "accept") {
            req.headers.push(("Accept".into(), "application/json".into()));
        }
    } else if body.is_some() && !has(&req, "content-type") {
        req.headers
            .push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
    }
    req.method = method.unwrap_or_else(|| if body.is_some() { "POST".into() } else { "GET".into() });
    req.body = body;
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_copied_request_then_method_url_headers_and_body_are_read() {
        let r = parse(
            "curl 'https://api.example.ru/v1/orders?x=1' \\\n  -X PUT \\\n  -H 'Authorization: Bearer t0k' \\\n  -H \"Content-Type: application/json\" \\\n  --data-raw '{\"a\": \"b c\"}' --compressed -s",
        )
        .unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.url, "https://api.example.ru/v1/orders?x=1");
        assert_eq!(
            r.headers,
            vec![
                ("Authorization".to_string(), "Bearer t0k".to_string()),
                ("Content-Type".to_string(), "application/json".to_string())
            ]
        );
        assert_eq!(r.body.as_deref(), Some("{\"a\": \"b c\"}"));
    }

    #[test]
    fn given_data_without_a_method_then_it_is_a_form_post() {
        let r = parse("curl -d a=1 -d b=2 https://e.ru/hook").unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.body.as_deref(), Some("a=1&b=2"));
        assert!(r
            .headers
            .contains(&("Content-Type".into(), "application/x-www-form-urlencoded".into())));
        assert_eq!(parse("curl https://e.ru/").unwrap().method, "GET");
    }

    #[test]
    fn given_json_and_user_then_their_headers_are_added() {
        let r = parse("curl --json '{\"k\":1}' -u 'bot:p@ss' --url=https://e.ru/x").unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "https://e.ru/x");
        assert!(r
            .headers
            .contains(&("Authorization".into(), "Basic Ym90OnBAc3M=".into())));
        assert!(r.headers.contains(&("Accept".into(), "application/json".into())));
    }

    #[test]
    fn given_what_cannot_be_imported_then_the_reason_is_given() {
        for (cmd, says) in [
            ("wget https://e.ru", "not a curl command"),
            ("curl -s", "no URL"),
            ("curl -F f=@x.png https://e.ru", "file uploads"),
            ("curl -d @body.json https://e.ru", "@file"),
            ("curl 'https://e.ru", "not closed"),
            ("curl -H NoColon https://e.ru", "no `:`"),
            ("curl https://a.ru https://b.ru", "more than one URL"),
        ] {
            let e = parse(cmd).unwrap_err();
            assert_eq!(e.field, "url");
            assert!(e.message.contains(says), "{cmd}: {}", e.message);
        }
    }

    #[test]
    fn given_hostile_input_then_nothing_panics() {
        for cmd in [
            "curl -я https://e.ru",
            "curl -Hя:б https://e.ru",
            "curl \\",
            "curl $'\\",
            "curl \u{0} x",
            "",
        ] {
            let _ = parse(cmd);
        }
    }

    #[test]
    fn given_shell_escapes_then_they_are_undone() {
        let r = parse("curl -XPOST -H$'X-Line: a\\tb' \"https://e.ru/\\$x\" -o /dev/null -m 5").unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.url, "https://e.ru/$x");
        assert_eq!(r.headers[0].1, "a\tb");
    }
}
