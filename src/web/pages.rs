//! The HTML pages: index, classify form.

use super::AppState;
use super::auth::client_ip;
use super::upload::{ClassifyResult, admit, run_classification, timed_body_image};
use axum::extract::{Request, State};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub(super) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head><body>\
         <header><h1>dermcam</h1></header><div class=\"notice\" id=\"disclaimer\">{d}. Do not use it to make decisions about anyone's health.</div>\
         {body}<footer>Research and education software. Model trained on public ISIC / web images (CC BY-NC); results may be wrong.</footer>\
         <script src=\"/static/app.js\"></script></body></html>",
        t = escape(title),
        d = escape(crate::DISCLAIMER),
    ))
}

pub(super) async fn index(State(st): State<AppState>) -> Html<String> {
    let model = st.model.get();
    let m = &model.manifest;
    let live = if st.live.is_some() {
        "<section><h2>Live device</h2><p class=\"headline\" id=\"live-label\">Connecting...</p><p id=\"live-meta\"></p>\
         <img id=\"live-frame\" class=\"preview\" alt=\"current camera frame\" hidden><p><button id=\"freeze\">Freeze / release</button></p></section>"
    } else {
        ""
    };
    page(
        "dermcam",
        &format!(
            "<main><section><h2>Classify an image</h2><form action=\"/classify\" method=\"post\" enctype=\"multipart/form-data\">\
             <p><input type=\"file\" name=\"image\" accept=\"image/jpeg,image/png,image/*\" capture=\"environment\" required></p>\
             <p><input type=\"submit\" value=\"Classify\"></p></form>\
             <p>JPEG or PNG, up to {mb} MB. Model: <b>{name}</b> ({arch}, {prec:?}). {stored}</p></section>{live}{logout}</main>",
            mb = st.cfg.max_upload_bytes / (1024 * 1024),
            stored = if st.cfg.save_uploads.is_some() {
                format!(
                    "Uploaded images are stored on this device (without their metadata; the newest {} are kept).",
                    st.cfg.save_max_files
                )
            } else {
                "Images are not stored.".into()
            },
            logout = if st.cfg.token.is_some() {
                "<section><form method=\"post\" action=\"/logout\"><p><input type=\"submit\" value=\"Sign out\"></p></form></section>"
            } else {
                ""
            },
            name = escape(&m.name),
            arch = escape(&m.architecture),
            prec = m.precision
        ),
    )
}

pub(super) async fn classify_form(State(st): State<AppState>, req: Request) -> Response {
    let result = match admit(&st, client_ip(&req)) {
        Ok(_place) => match timed_body_image(&st, req).await {
            Ok(b) => run_classification(&st, b, true).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok((r, thumb)) => result_page(&r, thumb).into_response(),
        Err(e) => {
            let status = e.status;
            let mut resp = page("dermcam error", &format!("<main><section><h2>Could not classify</h2><p class=\"err\" id=\"error\">{}</p><p><a href=\"/\">Back</a></p></section></main>", escape(&e.message))).into_response();
            *resp.status_mut() = status;
            resp
        }
    }
}

/// The result page: headline and refer flag, top classes, the preview and heat map.
fn result_page(r: &ClassifyResult, thumb: Option<Vec<u8>>) -> Html<String> {
    let preview = match thumb {
        Some(jpg) => format!(
            "<img class=\"preview\" alt=\"uploaded image\" src=\"data:image/jpeg;base64,{}\">",
            base64::engine::general_purpose::STANDARD.encode(&jpg)
        ),
        None => "<p id=\"no-preview\">Preview unavailable for this image.</p>".into(),
    };
    let mut rows = String::new();
    for c in r.classes.iter().take(3) {
        rows += &format!(
            // <progress>, not inline widths: the CSP forbids inline styles.
            "<tr><td>{}</td><td class=\"barcell\"><progress max=\"1000\" value=\"{:.0}\">{:.1}%</progress></td><td>{:.1}%</td></tr>",
            escape(&c.name),
            c.probability * 1000.0,
            c.probability * 100.0,
            c.probability * 100.0
        );
    }
    let warn = r
        .quality
        .warning
        .map(|w| format!("<p class=\"warn\">Image quality: {}</p>", escape(w)))
        .unwrap_or_default();
    let heat = r
        .heat_png
        .as_ref()
        .map(|b| format!("<figure><img id=\"heatmap\" alt=\"Where the model looked\" src=\"data:image/png;base64,{b}\"><figcaption>Where the model looked (class-activation map of the top class; red = most weight). Not an outline of the lesion.</figcaption></figure>"))
        .unwrap_or_default();
    let head = outcome_html(r) + &refer_html(r);
    page(
        "dermcam result",
        &format!(
            "<main><section class=\"{cls}\"><h2>Result</h2>{head}{warn}<table>{rows}</table>\
             <p>Model {model}; {ms:.0} ms.</p><p><a href=\"/\">Classify another image</a></p></section>\
             <section>{preview}{heat}</section></main>",
            cls = if r.uncertain { "uncertain" } else { "" },
            model = escape(&r.model.name),
            ms = r.total_ms
        ),
    )
}

/// The headline for the outcome, and why there is no class where there is none.
fn outcome_html(r: &ClassifyResult) -> String {
    use crate::model::classifier::Outcome;
    match r.outcome {
        Outcome::Retake => format!(
            "<p class=\"headline\" id=\"prediction\" data-outcome=\"retake\">Retake the photo</p><p>{}: the device does not classify images it would refuse from its own camera.</p>",
            escape(r.headline.trim_start_matches("Not classified: "))
        ),
        Outcome::NotLesion => format!(
            "<p class=\"headline\" id=\"prediction\" data-outcome=\"not_lesion\">{}</p><p>{}: this image does not look like the skin-lesion photos the model was trained on, so no class is given.</p>",
            crate::model::classifier::NOT_LESION_HEADLINE,
            crate::model::classifier::NOT_LESION_ADVICE
        ),
        Outcome::Uncertain => "<p class=\"headline\" id=\"prediction\" data-outcome=\"uncertain\">Uncertain</p><p>The model is not confident about any class for this image.</p>".to_string(),
        Outcome::Class => format!(
            "<p class=\"headline\" id=\"prediction\" data-outcome=\"class\">{}</p>",
            escape(&r.headline)
        ),
    }
}

/// The refer flag, when the image was classified.
fn refer_html(r: &ClassifyResult) -> String {
    match (r.refer, r.malignant_probability) {
        (Some(true), Some(mp)) => format!(
            "<p class=\"refer\" id=\"refer\">REFER: a clinician should see this lesion (malignant classes {:.0}%).</p>",
            mp * 100.0
        ),
        (Some(false), Some(mp)) => format!(
            "<p id=\"refer\">No referral flag (malignant classes {:.0}%). This is not a diagnosis.</p>",
            mp * 100.0
        ),
        _ => String::new(),
    }
}
