//! A tool result from an MCP server, as the model reads it: the text blocks, the structured
//! content (unless the text already says the same), and one line for each other block
//! (`[image/png, 12 kB]`). Works on the result's JSON, so it reads any server's results the same
//! way whatever the SDK's types. Pure.

use serde_json::Value;

/// What the model reads of a `CallToolResult` (as JSON).
pub fn for_model(result: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut texts: Vec<&str> = Vec::new();
    for block in result.get("content").and_then(Value::as_array).into_iter().flatten() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    texts.push(text);
                    parts.push(text.to_owned());
                }
            }
            Some("image" | "audio") => {
                let mime = block.get("mimeType").and_then(Value::as_str).unwrap_or("application/octet-stream");
                let bytes = block.get("data").and_then(Value::as_str).map_or(0, decoded_len);
                parts.push(format!("[{mime}, {}]", size(bytes)));
            }
            Some("resource") => {
                let resource = block.get("resource").unwrap_or(&Value::Null);
                let uri = resource.get("uri").and_then(Value::as_str).unwrap_or("?");
                match resource.get("text").and_then(Value::as_str) {
                    Some(text) => parts.push(format!("[resource {uri}]\n{text}")),
                    None => {
                        let mime =
                            resource.get("mimeType").and_then(Value::as_str).unwrap_or("application/octet-stream");
                        let bytes = resource.get("blob").and_then(Value::as_str).map_or(0, decoded_len);
                        parts.push(format!("[resource {uri}: {mime}, {}]", size(bytes)));
                    }
                }
            }
            Some("resource_link") => {
                let uri = block.get("uri").and_then(Value::as_str).unwrap_or("?");
                let name = block.get("name").and_then(Value::as_str).unwrap_or(uri);
                parts.push(format!("[link to {name}: {uri}]"));
            }
            other => parts.push(format!("[{} content]", other.unwrap_or("unknown"))),
        }
    }
    if let Some(structured) = result.get("structuredContent").filter(|v| !v.is_null()) {
        // Servers often send the same JSON as text too (SDKs wrap a plain value as
        // `{"result": value}`): say it once.
        let wrapped = structured.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("result"));
        let said = texts
            .iter()
            .any(|text| serde_json::from_str::<Value>(text).is_ok_and(|v| v == *structured || Some(&v) == wrapped));
        if !said {
            parts.push(format!("structured content: {structured}"));
        }
    }
    if parts.is_empty() {
        return "(the tool returned no content)".to_owned();
    }
    parts.join("\n")
}

/// The byte length of base64 `data`.
fn decoded_len(data: &str) -> usize {
    let data = data.trim_end_matches('=');
    data.len() * 3 / 4
}

fn size(bytes: usize) -> String {
    if bytes < 1000 { format!("{bytes} B") } else { format!("{} kB", (bytes + 500) / 1000) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_read_and_structured_content_said_once() {
        let same = json!({"content": [{"type": "text", "text": "{\"hour\": 9}"}], "structuredContent": {"hour": 9}});
        assert_eq!(for_model(&same), "{\"hour\": 9}");
        let wrapped = json!({"content": [{"type": "text", "text": "5"}], "structuredContent": {"result": 5}});
        assert_eq!(for_model(&wrapped), "5");
        let more = json!({"content": [{"type": "text", "text": "nine"}], "structuredContent": {"hour": 9}});
        assert_eq!(for_model(&more), "nine\nstructured content: {\"hour\":9}");
    }

    #[test]
    fn other_blocks_are_summarized() {
        let data = "A".repeat(16_000); // 12,000 bytes
        let result = json!({"content": [
            {"type": "image", "data": data, "mimeType": "image/png"},
            {"type": "text", "text": "an image"},
            {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "hello"}},
            {"type": "resource", "resource": {"uri": "file:///b.bin", "blob": "AAAA", "mimeType": "application/zip"}},
            {"type": "resource_link", "uri": "file:///c", "name": "c"},
            {"type": "hologram"}
        ]});
        assert_eq!(
            for_model(&result),
            "[image/png, 12 kB]\nan image\n[resource file:///a.txt]\nhello\n[resource file:///b.bin: application/zip, 3 B]\n[link to c: file:///c]\n[hologram content]"
        );
    }

    #[test]
    fn an_empty_result_says_so() {
        assert_eq!(for_model(&json!({"content": []})), "(the tool returned no content)");
        assert_eq!(for_model(&json!({})), "(the tool returned no content)");
    }
}
