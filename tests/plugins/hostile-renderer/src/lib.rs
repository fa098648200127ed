//! A renderer that misbehaves as the product's subtype says: it loops, it
//! returns megabytes, it returns scripts, it panics.

use orthrus_plugin_renderer::{BuildRef, Error, Link, Metadata, Product, Rendered, Renderer, export_renderer};

struct Hostile;

impl Renderer for Hostile {
    fn metadata() -> Metadata {
        Metadata {
            name: "hostile-renderer".into(),
            version: "0.1.0".into(),
            description: "Misbehaves as the product's subtype asks".into(),
            handles: vec!["evil".into()],
            capabilities: vec![],
        }
    }

    fn render(product: &Product, _build: &BuildRef) -> Result<Rendered, Error> {
        match product.subtype.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "huge" => Ok(Rendered::Html("<p>".to_owned() + &"x".repeat(8 << 20) + "</p>")),
            "script" => Ok(Rendered::Html(
                "<p onmouseover=\"steal()\">Report <script>fetch('/steal')</script><a href=\"javascript:steal()\">here</a></p>"
                    .into(),
            )),
            "link" => Ok(Rendered::Link(Link { href: "javascript:steal()".into(), text: "click".into() })),
            "panic" => panic!("this renderer panics on purpose"),
            other => Err(Error::Failed(format!("no idea how to show {other:?}"))),
        }
    }
}

export_renderer!(Hostile);
