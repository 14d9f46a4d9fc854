//! Output as docker prints it: tab-aligned tables (minimum width 10, padding 3), JSON arrays
//! indented by four spaces, and the small subset of Go templates people type
//! (`{{.Name}}`, `{{.IPAM.Config}}`, `{{json .}}`, `table …`, `\t`).

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::Value;

/// Prints `rows` under `header` as docker's tabwriter does.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths = vec![0usize; cols];
    for row in
        std::iter::once(&header.iter().map(|s| s.to_string()).collect::<Vec<_>>()).chain(rows)
    {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                let width = (widths[i] + 3).max(10);
                text.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|s| s.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

/// JSON with four-space indentation, as `docker inspect` prints.
pub fn pretty<T: Serialize>(value: &T) -> Result<String> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    value.serialize(&mut ser)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    if path == "." {
        return Some(value);
    }
    let mut v = value;
    for part in path.trim_start_matches('.').split('.') {
        v = v.get(part)?;
    }
    Some(v)
}

fn render_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".to_string(),
        Value::Object(m) => {
            let inner: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}:{}", render_value(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
        Value::Array(a) => {
            let inner: Vec<String> = a.iter().map(render_value).collect();
            format!("[{}]", inner.join(" "))
        }
        other => other.to_string(),
    }
}

/// Renders a Go-template subset against `value`: `{{.A.B}}`, `{{json .A}}`, `{{json .}}`.
pub fn template(tpl: &str, value: &Value) -> Result<String> {
    let tpl = tpl.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = tpl.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("template parsing error: unclosed action in {tpl:?}");
        };
        let action = after[..end].trim();
        let (json, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        if !path.starts_with('.') {
            bail!("template: unsupported action {{{{{action}}}}}; use {{{{.Field}}}} or {{{{json .Field}}}}");
        }
        let Some(v) = lookup(value, path) else {
            bail!("template: can't evaluate field {path}");
        };
        if json {
            out.push_str(&serde_json::to_string(v)?);
        } else {
            out.push_str(&render_value(v));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_like_docker() {
        let t = table(
            &["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
            &[vec![
                "0123456789ab".into(),
                "n1".into(),
                "bridge".into(),
                "local".into(),
            ]],
        );
        assert_eq!(
            t,
            "NETWORK ID     NAME      DRIVER    SCOPE\n0123456789ab   n1        bridge    local\n"
        );
    }

    #[test]
    fn templates() {
        let v =
            serde_json::json!({"Name": "n1", "IPAM": {"Driver": "default"}, "Labels": {"a": "b"}});
        assert_eq!(template("{{.Name}}", &v).unwrap_or_default(), "n1");
        assert_eq!(
            template("{{ .IPAM.Driver }}\\t!", &v).unwrap_or_default(),
            "default\t!"
        );
        assert_eq!(
            template("{{json .Labels}}", &v).unwrap_or_default(),
            r#"{"a":"b"}"#
        );
        assert_eq!(template("{{.Labels}}", &v).unwrap_or_default(), "map[a:b]");
        assert!(template("{{.Nope}}", &v).is_err());
        assert!(template("{{range .}}", &v).is_err());
    }
}
