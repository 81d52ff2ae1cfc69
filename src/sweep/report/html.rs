//! `summary.html`: the summary's tables and every chart on one page that
//! a browser opens from the results folder, with nothing to fetch: the
//! Markdown summary turned into HTML (pulldown-cmark, with its tables
//! extension) and each chart's SVG inline, in the order they were drawn.

use pulldown_cmark::{html, Options, Parser};

use super::charts::Chart;

/// The page for the summary `markdown` and `charts`, titled `title`.
pub(crate) fn render(title: &str, markdown: &str, charts: &[Chart]) -> String {
    let mut body = String::new();
    html::push_html(&mut body, Parser::new_ext(markdown, Options::ENABLE_TABLES));
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Sweep: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(title)
    );
    page.push_str(&body);
    if !charts.is_empty() {
        page.push_str("<h2>Charts</h2>\n");
        for chart in charts {
            page.push_str(&format!(
                "<figure>\n<figcaption>{}</figcaption>\n{}\n</figure>\n",
                escape(chart.file_name),
                chart.svg
            ));
        }
    }
    page.push_str("</body>\n</html>\n");
    page
}

/// Text safe in HTML content and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Readable tables (numbers right-aligned, as the Markdown says) and
/// charts no wider than the window.
const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:100em}\
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}\
th,td{border:1px solid #ccc;padding:0.25em 0.5em}\
th{background:#f3f3f3}\
tr:nth-child(even) td{background:#fafafa}\
figure{margin:2em 0}figure svg{max-width:100%;height:auto}\
figcaption{font-weight:bold;margin-bottom:0.5em}";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::{charts, fixture, markdown};

    #[test]
    fn every_table_and_every_chart_is_on_the_page() {
        let result = fixture::sweep();
        let md = markdown(&result);
        let drawn = charts::render(&result).unwrap();
        assert!(!drawn.is_empty());
        let page = render(&result.name, &md, &drawn);
        assert!(page.starts_with("<!DOCTYPE html>"));
        let tables_in_md = md.lines().filter(|l| l.starts_with("| ---")).count();
        assert!(tables_in_md >= 2, "{md}");
        assert_eq!(page.matches("<table>").count(), tables_in_md);
        assert_eq!(page.matches("<svg").count(), drawn.len());
        for chart in &drawn {
            assert!(page.contains(chart.file_name), "{}", chart.file_name);
        }
        // Right-aligned figure columns stay right-aligned.
        assert!(page.contains("style=\"text-align: right\""));
        assert!(page.ends_with("</html>\n"));
    }

    #[test]
    fn a_title_with_markup_is_text() {
        let page = render("a<b>&c", "# x\n", &[]);
        assert!(
            page.contains("<title>Sweep: a&lt;b&gt;&amp;c</title>"),
            "{page}"
        );
        assert!(!page.contains("<h2>Charts</h2>"));
    }
}
