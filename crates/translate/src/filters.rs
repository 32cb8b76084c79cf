//! HTTPRoute filters: header modifiers, redirects, rewrites, mirrors and CORS.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn apply_filter(
    store: &Store,
    key: &NsName,
    f: &HttpRouteRulesFilters,
    field: &str,
    matched_prefix: &str,
    action: &mut RuleAction,
    problems: &mut RuleProblems,
    tables: &mut Tables,
) -> Result<(), (String, String)> {
    let missing = |what: &str| {
        (
            field.to_string(),
            format!("filter type {what} needs its {what} field"),
        )
    };
    match f.r#type {
        HttpRouteRulesFiltersType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or_else(|| missing("requestHeaderModifier"))?;
            action.request_headers = Some(header_modifier(
                m,
                &format!("{field}.requestHeaderModifier"),
            )?);
        }
        HttpRouteRulesFiltersType::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or_else(|| missing("responseHeaderModifier"))?;
            // Same schema as the request modifier.
            let m: HttpRouteRulesFiltersRequestHeaderModifier = serde_json::to_value(m)
                .and_then(serde_json::from_value)
                .map_err(|e| (field.to_string(), e.to_string()))?;
            action.response_headers = Some(header_modifier(
                &m,
                &format!("{field}.responseHeaderModifier"),
            )?);
        }
        HttpRouteRulesFiltersType::RequestRedirect => {
            let r = f
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("requestRedirect"))?;
            action.redirect = Some(redirect(r, matched_prefix, field)?);
        }
        HttpRouteRulesFiltersType::UrlRewrite => {
            let r = f
                .url_rewrite
                .as_ref()
                .ok_or_else(|| missing("urlRewrite"))?;
            action.rewrite = Some(rewrite(r, matched_prefix, field)?);
        }
        HttpRouteRulesFiltersType::RequestMirror => {
            let m = f
                .request_mirror
                .as_ref()
                .ok_or_else(|| missing("requestMirror"))?;
            let mirror = mirror(store, key, m, field, problems, tables);
            action.mirrors.push(mirror);
        }
        HttpRouteRulesFiltersType::ExtensionRef => {
            return Err((
                format!("{field}.extensionRef"),
                "ExtensionRef filters are not supported".into(),
            ));
        }
        HttpRouteRulesFiltersType::Cors => {
            let c = f.cors.as_ref().ok_or_else(|| missing("cors"))?;
            action.cors = Some(sluice_config::Cors {
                allow_origins: c.allow_origins.clone().unwrap_or_default(),
                allow_methods: c.allow_methods.clone().unwrap_or_default(),
                allow_headers: c.allow_headers.clone().unwrap_or_default(),
                expose_headers: c.expose_headers.clone().unwrap_or_default(),
                max_age: c.max_age.and_then(|m| u32::try_from(m).ok()).unwrap_or(5),
                allow_credentials: c.allow_credentials.unwrap_or(false),
            });
        }
        HttpRouteRulesFiltersType::ExternalAuth => {
            return Err((
                field.to_string(),
                "the ExternalAuth filter is not supported".into(),
            ));
        }
    }
    Ok(())
}

fn redirect(
    r: &gateway_api::experimental::httproutes::HttpRouteRulesFiltersRequestRedirect,
    matched_prefix: &str,
    field: &str,
) -> Result<Redirect, (String, String)> {
    let path = match &r.path {
        None => None,
        Some(p) => Some(path_modifier(
            p.r#type == HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath,
            p.replace_full_path.as_deref(),
            p.replace_prefix_match.clone(),
            matched_prefix,
            field,
        )?),
    };
    let status = match &r.status_code {
        None => 302,
        Some(code) => u16::try_from(*code).unwrap_or(302),
    };
    Ok(Redirect {
        scheme: r.scheme.as_ref().map(|s| match s {
            HttpRouteRulesFiltersRequestRedirectScheme::Http => "http".to_string(),
            HttpRouteRulesFiltersRequestRedirectScheme::Https => "https".to_string(),
        }),
        hostname: r.hostname.clone(),
        port: r.port.and_then(|p| u16::try_from(p).ok()),
        path,
        status,
    })
}

fn rewrite(
    r: &gateway_api::experimental::httproutes::HttpRouteRulesFiltersUrlRewrite,
    matched_prefix: &str,
    field: &str,
) -> Result<UrlRewrite, (String, String)> {
    let path = match &r.path {
        None => None,
        Some(p) => Some(path_modifier(
            p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath,
            p.replace_full_path.as_deref(),
            p.replace_prefix_match.clone(),
            matched_prefix,
            field,
        )?),
    };
    Ok(UrlRewrite {
        hostname: r.hostname.clone(),
        path,
    })
}

/// A RequestMirror filter: its backend (an unresolved one is noted in `problems`) and share.
fn mirror(
    store: &Store,
    key: &NsName,
    m: &gateway_api::experimental::httproutes::HttpRouteRulesFiltersRequestMirror,
    field: &str,
    problems: &mut RuleProblems,
    tables: &mut Tables,
) -> Mirror {
    let b = &m.backend_ref;
    let target = resolve_backend(
        store,
        key,
        b.group.as_deref(),
        b.kind.as_deref(),
        &b.name,
        b.namespace.as_deref(),
        b.port,
        tables,
    );
    note_invalid(
        &target,
        format!("{field}.requestMirror.backendRef"),
        problems,
    );
    let fraction_ppm = match (&m.fraction, m.percent) {
        (Some(fr), _) => {
            let den = fr.denominator.unwrap_or(100).max(1) as u64;
            (fr.numerator.max(0) as u64 * 1_000_000 / den).min(1_000_000) as u32
        }
        (None, Some(p)) => (p.clamp(0, 100) as u32) * 10_000,
        (None, None) => 1_000_000,
    };
    Mirror {
        target,
        fraction_ppm,
    }
}

/// The path of a redirect or rewrite (the two filters' path types have the same two values):
/// ReplaceFullPath, or ReplacePrefixMatch of the rule's matched prefix.
fn path_modifier(
    full: bool,
    full_path: Option<&str>,
    prefix: Option<String>,
    matched_prefix: &str,
    field: &str,
) -> Result<PathModifier, (String, String)> {
    if full {
        Ok(PathModifier::Full(full_path.unwrap_or("/").to_string()))
    } else {
        prefix_modifier(matched_prefix, prefix, field)
    }
}

pub(super) fn prefix_modifier(
    matched_prefix: &str,
    replacement: Option<String>,
    field: &str,
) -> Result<PathModifier, (String, String)> {
    if matched_prefix.is_empty() {
        return Err((
            field.to_string(),
            "ReplacePrefixMatch needs the rule's first match to be a PathPrefix match".into(),
        ));
    }
    Ok(PathModifier::Prefix {
        matched: matched_prefix.trim_end_matches('/').to_string(),
        replacement: replacement.unwrap_or_else(|| "/".into()),
    })
}

pub(super) fn header_modifier(
    m: &HttpRouteRulesFiltersRequestHeaderModifier,
    field: &str,
) -> Result<HeaderModifier, (String, String)> {
    let pair = |name: &str, value: &str, f: String| -> Result<Header, (String, String)> {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| (f.clone(), format!("header name {name:?}: {e}")))?;
        HeaderValue::from_str(value).map_err(|e| (f, format!("header value {value:?}: {e}")))?;
        Ok(Header {
            name: n.as_str().to_string(),
            value: value.to_string(),
        })
    };
    let mut out = HeaderModifier::default();
    for (i, s) in m.set.iter().flatten().enumerate() {
        out.set
            .push(pair(&s.name, &s.value, format!("{field}.set[{i}]"))?);
    }
    for (i, s) in m.add.iter().flatten().enumerate() {
        out.add
            .push(pair(&s.name, &s.value, format!("{field}.add[{i}]"))?);
    }
    for (i, r) in m.remove.iter().flatten().enumerate() {
        out.remove.push(
            HeaderName::from_bytes(r.as_bytes())
                .map_err(|e| (format!("{field}.remove[{i}]"), e.to_string()))?
                .as_str()
                .to_string(),
        );
    }
    Ok(out)
}
