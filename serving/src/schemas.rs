//! `GET /v1/schemas` and `GET /v1/schemas/{topic}`: the JSON Schema of each topic's record
//! values (DESIGN §3), generated from the same Rust types that parse and write them — so a
//! Kafka client written in another language can validate what it reads and writes.
//!
//! Every `prism.cdc.<db>.<schema>.<table>` topic carries the same envelope
//! ([`CdcEnvelope`]); `GET /v1/schemas/prism.cdc.flights.public.flights` answers it.
//!
//! The schemas are OpenAPI 3.1 schema objects, which are JSON Schema (draft 2020-12).
//! Decimals (prices) are strings with at most 6 decimals; times are UTC milliseconds.

use axum::extract::rejection::PathRejection;
use axum::extract::Path;
use axum::Json;
use prism_core::event::{AccessEvent, CdcEnvelope, DeadLetter, Quote, ACCESS_LOGS_TOPIC, CDC_TOPIC_PREFIX, DLQ_TOPIC, QUOTES_TOPIC};
use serde::{Deserialize, Serialize};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ApiError;

/// One topic and what its records hold.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopicSchema {
    /// The topic, e.g. `prism.quotes`.
    pub topic: String,
    /// What the record key is.
    pub key: String,
    /// The JSON Schema of the record value.
    #[schema(value_type = Object)]
    pub value_schema: serde_json::Value,
}

/// Answer of `/v1/schemas`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SchemasResponse {
    /// Every topic with a schema.
    pub topics: Vec<TopicSchema>,
}

fn schema_of<T: PartialSchema>() -> serde_json::Value {
    serde_json::to_value(T::schema()).unwrap_or(serde_json::Value::Null)
}

/// How `/v1/schemas` names the CDC topics (one per captured table).
const CDC_TOPIC: &str = "prism.cdc.<db>.<schema>.<table>";
const CDC_KEY: &str = "the row's primary key as a JSON object, e.g. {\"id\":7} ({} for a truncate)";

fn all() -> Vec<TopicSchema> {
    let topic = |topic: &str, key: &str, value_schema| TopicSchema { topic: topic.into(), key: key.into(), value_schema };
    vec![
        topic(QUOTES_TOPIC, "the symbol (UTF-8)", schema_of::<Quote>()),
        topic(ACCESS_LOGS_TOPIC, "the client host (UTF-8)", schema_of::<AccessEvent>()),
        topic(DLQ_TOPIC, "the rejected record's key (or its source's name)", schema_of::<DeadLetter>()),
        topic(CDC_TOPIC, CDC_KEY, schema_of::<CdcEnvelope>()),
    ]
}

/// The JSON Schema of every topic's record values.
#[utoipa::path(get, path = "/v1/schemas", tag = "views", responses((status = 200, description = "Schemas", body = SchemasResponse)))]
pub async fn get_schemas() -> Json<SchemasResponse> {
    Json(SchemasResponse { topics: all() })
}

/// The JSON Schema of one topic's record values.
#[utoipa::path(
    get,
    path = "/v1/schemas/{topic}",
    tag = "views",
    params(("topic" = String, Path, description = "A topic, e.g. prism.quotes")),
    responses((status = 200, description = "The topic's schema", body = TopicSchema), (status = 404, description = "No such topic", body = ApiError))
)]
pub async fn get_schema(path: Result<Path<String>, PathRejection>) -> Result<Json<TopicSchema>, ApiError> {
    let Path(topic) = path.map_err(|e| ApiError::bad_request(format!("topic: {}", e.body_text())))?;
    if topic.starts_with(CDC_TOPIC_PREFIX) && topic.len() > CDC_TOPIC_PREFIX.len() {
        // Every captured table's topic carries the same envelope.
        return Ok(Json(TopicSchema { topic, key: CDC_KEY.into(), value_schema: schema_of::<CdcEnvelope>() }));
    }
    all().into_iter().find(|t| t.topic == topic).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no topic {topic:?}: Prism's topics are {QUOTES_TOPIC}, {ACCESS_LOGS_TOPIC}, {DLQ_TOPIC} and {CDC_TOPIC}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_name_every_field_of_the_records() {
        let topics = all();
        let quote = &topics[0].value_schema;
        for field in ["symbol", "ts", "price", "size", "bid", "ask", "exchange"] {
            assert!(quote["properties"][field].is_object(), "{field}: {quote}");
        }
        assert_eq!(quote["properties"]["price"]["type"], "string", "{quote}");
        let required: Vec<&str> = quote["required"].as_array().expect("required").iter().filter_map(|v| v.as_str()).collect();
        assert!(required.contains(&"symbol") && required.contains(&"price") && !required.contains(&"bid"), "{required:?}");
        let access = &topics[1].value_schema;
        for field in ["ts", "host", "status", "bytes", "duration_ms", "source_file", "line"] {
            assert!(access["properties"][field].is_object(), "{field}: {access}");
        }
        assert!(topics[2].value_schema["properties"]["reason"].is_object());
        let cdc = &topics[3].value_schema;
        for field in ["before", "after", "source", "op", "ts_ms"] {
            assert!(cdc["properties"][field].is_object(), "{field}: {cdc}");
        }
    }
}
