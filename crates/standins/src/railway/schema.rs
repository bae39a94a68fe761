//! Railway's GraphQL schema, loaded once from the introspection result the project ships
//! (`schemas/railway-schema.json`), and the GraphQL-spec validation the stand-in applies to
//! every document before it executes anything: fields, arguments, input-object keys,
//! scalar and enum values, variables and fragments, with graphql-js's error messages.
//!
//! It knows nothing about what the stand-in implements; `railway.rs` decides that from the
//! [`Prepared`] document this module hands back.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

use graphql_parser::query::{
    Definition, Document, FragmentDefinition, OperationDefinition, Selection, SelectionSet, Type,
    TypeCondition, Value, VariableDefinition,
};
use graphql_parser::Pos;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

/// Documents are made `'static` (`into_static`) so one lifetime describes every borrow.
pub(super) type Doc = Document<'static, String>;

/// The schema, parsed on first use.
pub(super) fn schema() -> Result<&'static Schema, &'static str> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| Schema::parse(include_str!("../../schemas/railway-schema.json")))
        .as_ref()
        .map_err(String::as_str)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Scalar,
    Object,
    Interface,
    Union,
    Enum,
    InputObject,
}

#[derive(Debug)]
pub(super) struct TypeDef {
    kind: Kind,
    fields: HashMap<String, FieldDef>,
    input_fields: Vec<InputValue>,
    enum_values: HashSet<String>,
    possible_types: HashSet<String>,
}

#[derive(Debug)]
struct FieldDef {
    args: Vec<InputValue>,
    ty: TypeRef,
}

#[derive(Debug)]
struct InputValue {
    name: String,
    ty: TypeRef,
    has_default: bool,
}

/// A GraphQL type reference (`String`, `[String!]!`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    fn named(&self) -> &str {
        match self {
            TypeRef::Named(n) => n,
            TypeRef::List(t) | TypeRef::NonNull(t) => t.named(),
        }
    }

    fn from_ast(ty: &Type<'_, String>) -> Self {
        match ty {
            Type::NamedType(n) => TypeRef::Named(n.clone()),
            Type::ListType(t) => TypeRef::List(Box::new(TypeRef::from_ast(t))),
            Type::NonNullType(t) => TypeRef::NonNull(Box::new(TypeRef::from_ast(t))),
        }
    }
}

impl fmt::Display for TypeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeRef::Named(n) => write!(f, "{n}"),
            TypeRef::List(t) => write!(f, "[{t}]"),
            TypeRef::NonNull(t) => write!(f, "{t}!"),
        }
    }
}

#[derive(Debug)]
pub(super) struct Schema {
    types: HashMap<String, TypeDef>,
    query: String,
    mutation: Option<String>,
    subscription: Option<String>,
    directives: HashSet<String>,
}

// The introspection JSON, as much of it as validation needs.
#[derive(Deserialize)]
struct RawIntrospection {
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    #[serde(rename = "__schema")]
    schema: RawSchema,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSchema {
    query_type: RawNamed,
    mutation_type: Option<RawNamed>,
    subscription_type: Option<RawNamed>,
    types: Vec<RawType>,
    directives: Vec<RawNamed>,
}

#[derive(Deserialize)]
struct RawNamed {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawType {
    kind: String,
    name: String,
    fields: Option<Vec<RawField>>,
    input_fields: Option<Vec<RawInput>>,
    enum_values: Option<Vec<RawNamed>>,
    possible_types: Option<Vec<RawNamed>>,
}

#[derive(Deserialize)]
struct RawField {
    name: String,
    args: Vec<RawInput>,
    #[serde(rename = "type")]
    ty: RawTypeRef,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInput {
    name: String,
    #[serde(rename = "type")]
    ty: RawTypeRef,
    default_value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTypeRef {
    kind: String,
    name: Option<String>,
    of_type: Option<Box<RawTypeRef>>,
}

impl RawTypeRef {
    fn convert(&self) -> Result<TypeRef, String> {
        let inner = || {
            self.of_type
                .as_deref()
                .ok_or_else(|| format!("{} without ofType", self.kind))
                .and_then(RawTypeRef::convert)
        };
        match self.kind.as_str() {
            "NON_NULL" => Ok(TypeRef::NonNull(Box::new(inner()?))),
            "LIST" => Ok(TypeRef::List(Box::new(inner()?))),
            _ => self
                .name
                .clone()
                .map(TypeRef::Named)
                .ok_or_else(|| "named type without a name".to_owned()),
        }
    }
}

impl RawInput {
    fn convert(&self) -> Result<InputValue, String> {
        Ok(InputValue {
            name: self.name.clone(),
            ty: self.ty.convert()?,
            has_default: self.default_value.is_some(),
        })
    }
}

impl Schema {
    fn parse(text: &str) -> Result<Schema, String> {
        let raw: RawIntrospection =
            serde_json::from_str(text).map_err(|e| format!("railway schema: {e}"))?;
        let raw = raw.data.schema;
        let mut types = HashMap::new();
        for t in raw.types {
            let kind = match t.kind.as_str() {
                "SCALAR" => Kind::Scalar,
                "OBJECT" => Kind::Object,
                "INTERFACE" => Kind::Interface,
                "UNION" => Kind::Union,
                "ENUM" => Kind::Enum,
                "INPUT_OBJECT" => Kind::InputObject,
                other => return Err(format!("railway schema: unknown kind {other}")),
            };
            let mut fields = HashMap::new();
            for f in t.fields.unwrap_or_default() {
                let args = f
                    .args
                    .iter()
                    .map(RawInput::convert)
                    .collect::<Result<_, _>>()?;
                fields.insert(
                    f.name,
                    FieldDef {
                        args,
                        ty: f.ty.convert()?,
                    },
                );
            }
            let input_fields = t
                .input_fields
                .unwrap_or_default()
                .iter()
                .map(RawInput::convert)
                .collect::<Result<_, _>>()?;
            let enum_values = t
                .enum_values
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .collect();
            let possible_types = t
                .possible_types
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .collect();
            types.insert(
                t.name,
                TypeDef {
                    kind,
                    fields,
                    input_fields,
                    enum_values,
                    possible_types,
                },
            );
        }
        Ok(Schema {
            types,
            query: raw.query_type.name,
            mutation: raw.mutation_type.map(|t| t.name),
            subscription: raw.subscription_type.map(|t| t.name),
            directives: raw.directives.into_iter().map(|d| d.name).collect(),
        })
    }

    /// Whether `type_name.field` exists.
    #[cfg(test)]
    pub(super) fn has_field(&self, type_name: &str, field: &str) -> bool {
        self.types
            .get(type_name)
            .is_some_and(|t| t.fields.contains_key(field))
    }

    fn kind(&self, name: &str) -> Option<Kind> {
        self.types.get(name).map(|t| t.kind)
    }

    /// The object types a value of type `name` can be.
    fn possible<'a>(&'a self, name: &'a str) -> BTreeSet<&'a str> {
        match self.types.get(name) {
            Some(t) if t.kind == Kind::Object => BTreeSet::from([name]),
            Some(t) => t.possible_types.iter().map(String::as_str).collect(),
            None => BTreeSet::new(),
        }
    }
}

/// A GraphQL error before execution (the document or its variables are wrong).
#[derive(Debug, Clone)]
pub(super) struct GqlError {
    pub message: String,
    pub pos: Option<Pos>,
}

impl GqlError {
    fn at(message: impl Into<String>, pos: Pos) -> Self {
        GqlError {
            message: message.into(),
            pos: Some(pos),
        }
    }

    fn bare(message: impl Into<String>) -> Self {
        GqlError {
            message: message.into(),
            pos: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpKind {
    Query,
    Mutation,
    Subscription,
}

/// One field of a validated document, fragments flattened and `@skip`/`@include` applied.
#[derive(Debug, Clone)]
pub(super) struct Selected {
    /// The response key: the alias, or the field name.
    pub key: String,
    pub name: String,
    /// The type the field was selected on.
    pub parent: String,
    /// Arguments with variables substituted (an unset optional variable is left out).
    pub args: Map<String, Json>,
    pub children: Vec<Selected>,
    pub pos: Pos,
}

/// A validated operation, ready to execute.
#[derive(Debug)]
pub(super) struct Prepared {
    pub kind: OpKind,
    pub fields: Vec<Selected>,
}

struct Operation<'d> {
    kind: OpKind,
    name: Option<&'d str>,
    variables: &'d [VariableDefinition<'static, String>],
    directives: &'d [graphql_parser::query::Directive<'static, String>],
    selection_set: &'d SelectionSet<'static, String>,
    pos: Pos,
}

/// Picks the operation `operation_name` names (or the only one).
fn select_operation<'d>(
    doc: &'d Doc,
    operation_name: Option<&str>,
) -> Result<Operation<'d>, GqlError> {
    let mut operations = Vec::new();
    for def in &doc.definitions {
        if let Definition::Operation(op) = def {
            operations.push(match op {
                OperationDefinition::SelectionSet(set) => Operation {
                    kind: OpKind::Query,
                    name: None,
                    variables: &[],
                    directives: &[],
                    selection_set: set,
                    pos: set.span.0,
                },
                OperationDefinition::Query(q) => Operation {
                    kind: OpKind::Query,
                    name: q.name.as_deref(),
                    variables: &q.variable_definitions,
                    directives: &q.directives,
                    selection_set: &q.selection_set,
                    pos: q.position,
                },
                OperationDefinition::Mutation(m) => Operation {
                    kind: OpKind::Mutation,
                    name: m.name.as_deref(),
                    variables: &m.variable_definitions,
                    directives: &m.directives,
                    selection_set: &m.selection_set,
                    pos: m.position,
                },
                OperationDefinition::Subscription(s) => Operation {
                    kind: OpKind::Subscription,
                    name: s.name.as_deref(),
                    variables: &s.variable_definitions,
                    directives: &s.directives,
                    selection_set: &s.selection_set,
                    pos: s.position,
                },
            });
        }
    }
    match operation_name {
        Some(wanted) => {
            let index = operations.iter().position(|op| op.name == Some(wanted));
            match index {
                Some(i) => Ok(operations.swap_remove(i)),
                None => Err(GqlError::bare(format!(
                    "Unknown operation named \"{wanted}\"."
                ))),
            }
        }
        None if operations.len() == 1 => Ok(operations.swap_remove(0)),
        None if operations.is_empty() => Err(GqlError::bare("Must provide an operation.")),
        None => Err(GqlError::bare(
            "Must provide operation name if query contains multiple operations.",
        )),
    }
}

fn fragments(doc: &Doc) -> HashMap<&str, &FragmentDefinition<'static, String>> {
    doc.definitions
        .iter()
        .filter_map(|def| match def {
            Definition::Fragment(f) => Some((f.name.as_str(), f)),
            Definition::Operation(_) => None,
        })
        .collect()
}

/// The root field names the chosen operation selects, without validating anything (the
/// stand-in names requests by them, refused ones included).
pub(super) fn root_field_names(doc: &Doc, operation_name: Option<&str>) -> Vec<String> {
    fn walk(
        set: &SelectionSet<'_, String>,
        frags: &HashMap<&str, &FragmentDefinition<'_, String>>,
        depth: usize,
        out: &mut Vec<String>,
    ) {
        if depth > 8 {
            return;
        }
        for item in &set.items {
            match item {
                Selection::Field(f) => {
                    if !out.contains(&f.name) {
                        out.push(f.name.clone());
                    }
                }
                Selection::InlineFragment(i) => walk(&i.selection_set, frags, depth + 1, out),
                Selection::FragmentSpread(s) => {
                    if let Some(frag) = frags.get(s.fragment_name.as_str()) {
                        walk(&frag.selection_set, frags, depth + 1, out);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Ok(op) = select_operation(doc, operation_name) {
        walk(op.selection_set, &fragments(doc), 0, &mut out);
    }
    out
}

/// Validates `doc` against the schema, coerces `variables`, and flattens the chosen
/// operation into [`Selected`] fields.
pub(super) fn prepare(
    schema: &Schema,
    doc: &Doc,
    operation_name: Option<&str>,
    variables: &Map<String, Json>,
) -> Result<Prepared, Vec<GqlError>> {
    let op = select_operation(doc, operation_name).map_err(|e| vec![e])?;
    let root = match op.kind {
        OpKind::Query => Some(schema.query.clone()),
        OpKind::Mutation => schema.mutation.clone(),
        OpKind::Subscription => schema.subscription.clone(),
    };
    let Some(root) = root else {
        return Err(vec![GqlError::at(
            "Schema is not configured to execute this operation.",
            op.pos,
        )]);
    };
    let mut v = Validator {
        schema,
        fragments: fragments(doc),
        var_types: HashMap::new(),
        vars: Map::new(),
        used_vars: HashSet::new(),
        used_fragments: HashSet::new(),
        errors: Vec::new(),
        op_name: op.name.map(str::to_owned),
        spread_stack: Vec::new(),
    };
    let coercion_errors = v.coerce_variables(op.variables, variables);
    let location = match op.kind {
        OpKind::Query => "QUERY",
        OpKind::Mutation => "MUTATION",
        OpKind::Subscription => "SUBSCRIPTION",
    };
    v.directives_ok(op.directives, location);
    let mut fields = Vec::new();
    v.selection_set(&root, op.selection_set, &mut fields);
    for def in op.variables {
        if !v.used_vars.contains(def.name.as_str()) {
            let message = match &v.op_name {
                Some(op) => format!(
                    "Variable \"${}\" is never used in operation \"{op}\".",
                    def.name
                ),
                None => format!("Variable \"${}\" is never used.", def.name),
            };
            v.errors.push(GqlError::at(message, def.position));
        }
    }
    for (name, frag) in &v.fragments {
        if !v.used_fragments.contains(*name) {
            v.errors.push(GqlError::at(
                format!("Fragment \"{name}\" is never used."),
                frag.position,
            ));
        }
    }
    if !v.errors.is_empty() {
        return Err(v.errors);
    }
    if !coercion_errors.is_empty() {
        return Err(coercion_errors);
    }
    Ok(Prepared {
        kind: op.kind,
        fields,
    })
}

struct Validator<'s, 'd> {
    schema: &'s Schema,
    fragments: HashMap<&'d str, &'d FragmentDefinition<'static, String>>,
    /// Declared variable types, and whether each has a default.
    var_types: HashMap<String, (TypeRef, bool)>,
    /// Coerced variable values (provided or defaulted).
    vars: Map<String, Json>,
    used_vars: HashSet<String>,
    used_fragments: HashSet<String>,
    errors: Vec<GqlError>,
    op_name: Option<String>,
    spread_stack: Vec<String>,
}

impl<'d> Validator<'_, 'd> {
    fn coerce_variables(
        &mut self,
        defs: &'d [VariableDefinition<'static, String>],
        provided: &Map<String, Json>,
    ) -> Vec<GqlError> {
        let mut errors = Vec::new();
        for def in defs {
            let name = def.name.as_str();
            let ty = TypeRef::from_ast(&def.var_type);
            if self.var_types.contains_key(name) {
                self.errors.push(GqlError::at(
                    format!("There can be only one variable named \"${name}\"."),
                    def.position,
                ));
                continue;
            }
            match self.schema.kind(ty.named()) {
                None => {
                    self.errors.push(GqlError::at(
                        format!("Unknown type \"{}\".", ty.named()),
                        def.position,
                    ));
                    continue;
                }
                Some(Kind::Object | Kind::Interface | Kind::Union) => {
                    self.errors.push(GqlError::at(
                        format!("Variable \"${name}\" cannot be non-input type \"{ty}\"."),
                        def.position,
                    ));
                    continue;
                }
                Some(_) => {}
            }
            self.var_types
                .insert(name.to_owned(), (ty.clone(), def.default_value.is_some()));
            match provided.get(name) {
                Some(value) => match self.coerce_json(value, &ty) {
                    Ok(coerced) => {
                        self.vars.insert(name.to_owned(), coerced);
                    }
                    Err(why) => errors.push(GqlError::at(
                        format!("Variable \"${name}\" got invalid value {value}; {why}"),
                        def.position,
                    )),
                },
                None => match &def.default_value {
                    Some(default) => {
                        let before = self.errors.len();
                        self.check_literal(default, &ty, def.position, false);
                        if self.errors.len() == before {
                            if let Some(json) = self.literal_json(default) {
                                self.vars.insert(name.to_owned(), json);
                            }
                        }
                    }
                    None if matches!(ty, TypeRef::NonNull(_)) => errors.push(GqlError::at(
                        format!("Variable \"${name}\" of required type \"{ty}\" was not provided."),
                        def.position,
                    )),
                    None => {}
                },
            }
        }
        errors
    }

    /// Input coercion of a JSON variable value (graphql-js `coerceInputValue`).
    fn coerce_json(&self, value: &Json, ty: &TypeRef) -> Result<Json, String> {
        match ty {
            TypeRef::NonNull(inner) => {
                if value.is_null() {
                    Err(format!(
                        "Expected non-nullable type \"{ty}\" not to be null."
                    ))
                } else {
                    self.coerce_json(value, inner)
                }
            }
            _ if value.is_null() => Ok(Json::Null),
            TypeRef::List(inner) => match value {
                Json::Array(items) => items
                    .iter()
                    .map(|item| self.coerce_json(item, inner))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Json::Array),
                single => Ok(Json::Array(vec![self.coerce_json(single, inner)?])),
            },
            TypeRef::Named(name) => {
                let Some(def) = self.schema.types.get(name) else {
                    return Err(format!("Unknown type \"{name}\"."));
                };
                match def.kind {
                    Kind::Scalar => coerce_scalar_json(name, value),
                    Kind::Enum => match value {
                        Json::String(s) if def.enum_values.contains(s) => Ok(value.clone()),
                        Json::String(s) => {
                            Err(format!("Value \"{s}\" does not exist in \"{name}\" enum."))
                        }
                        other => Err(format!(
                            "Enum \"{name}\" cannot represent non-string value: {other}."
                        )),
                    },
                    Kind::InputObject => {
                        let Json::Object(given) = value else {
                            return Err(format!("Expected type \"{name}\" to be an object."));
                        };
                        let mut out = Map::new();
                        for key in given.keys() {
                            if !def.input_fields.iter().any(|f| &f.name == key) {
                                return Err(format!(
                                    "Field \"{key}\" is not defined by type \"{name}\"."
                                ));
                            }
                        }
                        for field in &def.input_fields {
                            match given.get(&field.name) {
                                Some(v) => {
                                    let coerced = self
                                        .coerce_json(v, &field.ty)
                                        .map_err(|why| format!("{why} At \"{}\".", field.name))?;
                                    out.insert(field.name.clone(), coerced);
                                }
                                None if matches!(field.ty, TypeRef::NonNull(_))
                                    && !field.has_default =>
                                {
                                    return Err(format!(
                                        "Field \"{}\" of required type \"{}\" was not provided.",
                                        field.name, field.ty
                                    ));
                                }
                                None => {}
                            }
                        }
                        Ok(Json::Object(out))
                    }
                    Kind::Object | Kind::Interface | Kind::Union => {
                        Err(format!("\"{name}\" is not an input type."))
                    }
                }
            }
        }
    }

    /// Checks a literal (argument value or default) against `expected`
    /// (graphql-js `ValuesOfCorrectTypeRule` and `VariablesInAllowedPositionRule`).
    fn check_literal(
        &mut self,
        value: &Value<'_, String>,
        expected: &TypeRef,
        pos: Pos,
        location_has_default: bool,
    ) {
        if let Value::Variable(name) = value {
            self.check_variable_use(name, expected, pos, location_has_default);
            return;
        }
        match expected {
            TypeRef::NonNull(inner) => {
                if matches!(value, Value::Null) {
                    self.errors.push(GqlError::at(
                        format!("Expected value of type \"{expected}\", found null."),
                        pos,
                    ));
                } else {
                    self.check_literal(value, inner, pos, false);
                }
            }
            _ if matches!(value, Value::Null) => {}
            TypeRef::List(inner) => match value {
                Value::List(items) => {
                    for item in items {
                        self.check_literal(item, inner, pos, false);
                    }
                }
                single => self.check_literal(single, inner, pos, false),
            },
            TypeRef::Named(name) => self.check_named_literal(value, name, pos),
        }
    }

    fn check_named_literal(&mut self, value: &Value<'_, String>, name: &str, pos: Pos) {
        let schema = self.schema;
        let Some(def) = schema.types.get(name) else {
            self.errors
                .push(GqlError::at(format!("Unknown type \"{name}\"."), pos));
            return;
        };
        match def.kind {
            Kind::Scalar => {
                if name == "EnvironmentVariables" {
                    // Stricter on purpose: Railway's scalar takes a JSON object of variable
                    // values; the stand-in wants every value a string (or a variable).
                    let ok = match value {
                        Value::Object(map) => map.values().all(|v| match v {
                            Value::String(_) => true,
                            Value::Variable(var) => {
                                self.used_vars.insert(var.clone());
                                if !self.var_types.contains_key(var.as_str()) {
                                    self.undefined_variable(var, pos);
                                }
                                true
                            }
                            _ => false,
                        }),
                        _ => false,
                    };
                    if !ok {
                        self.errors.push(GqlError::at(
                            format!(
                                "Expected value of type \"{name}\", found {value}; stand-in: \
                                 EnvironmentVariables must be an object of string values."
                            ),
                            pos,
                        ));
                    }
                    return;
                }
                if let Some(why) = scalar_literal_error(name, value) {
                    self.errors.push(GqlError::at(why, pos));
                } else if !is_builtin_scalar(name) {
                    // A custom scalar may hold variables anywhere inside.
                    self.mark_nested_variables(value, pos);
                }
            }
            Kind::Enum => match value {
                Value::Enum(e) if def.enum_values.contains(e.as_str()) => {}
                Value::Enum(e) => self.errors.push(GqlError::at(
                    format!("Value \"{e}\" does not exist in \"{name}\" enum."),
                    pos,
                )),
                other => self.errors.push(GqlError::at(
                    format!("Enum \"{name}\" cannot represent non-enum value: {other}."),
                    pos,
                )),
            },
            Kind::InputObject => {
                let Value::Object(given) = value else {
                    self.errors.push(GqlError::at(
                        format!("Expected value of type \"{name}\", found {value}."),
                        pos,
                    ));
                    return;
                };
                for (key, field_value) in given {
                    match def.input_fields.iter().find(|f| &f.name == key) {
                        None => self.errors.push(GqlError::at(
                            format!("Field \"{key}\" is not defined by type \"{name}\"."),
                            pos,
                        )),
                        Some(field) => {
                            self.check_literal(field_value, &field.ty, pos, field.has_default)
                        }
                    }
                }
                for field in &def.input_fields {
                    let required = matches!(field.ty, TypeRef::NonNull(_)) && !field.has_default;
                    if required && !given.contains_key(&field.name) {
                        self.errors.push(GqlError::at(
                            format!(
                                "Field \"{name}.{}\" of required type \"{}\" was not provided.",
                                field.name, field.ty
                            ),
                            pos,
                        ));
                    }
                }
            }
            Kind::Object | Kind::Interface | Kind::Union => self.errors.push(GqlError::at(
                format!("Type \"{name}\" is not an input type."),
                pos,
            )),
        }
    }

    fn mark_nested_variables(&mut self, value: &Value<'_, String>, pos: Pos) {
        match value {
            Value::Variable(var) => {
                self.used_vars.insert(var.clone());
                if !self.var_types.contains_key(var.as_str()) {
                    self.undefined_variable(var, pos);
                }
            }
            Value::List(items) => items
                .iter()
                .for_each(|item| self.mark_nested_variables(item, pos)),
            Value::Object(map) => map
                .values()
                .for_each(|item| self.mark_nested_variables(item, pos)),
            _ => {}
        }
    }

    fn undefined_variable(&mut self, name: &str, pos: Pos) {
        let message = match &self.op_name {
            Some(op) => format!("Variable \"${name}\" is not defined by operation \"{op}\"."),
            None => format!("Variable \"${name}\" is not defined."),
        };
        self.errors.push(GqlError::at(message, pos));
    }

    fn check_variable_use(
        &mut self,
        name: &str,
        expected: &TypeRef,
        pos: Pos,
        location_has_default: bool,
    ) {
        self.used_vars.insert(name.to_owned());
        let Some((var_ty, var_has_default)) = self.var_types.get(name).cloned() else {
            self.undefined_variable(name, pos);
            return;
        };
        let allowed = match expected {
            TypeRef::NonNull(inner) if !matches!(var_ty, TypeRef::NonNull(_)) => {
                (var_has_default || location_has_default) && is_subtype(&var_ty, inner)
            }
            _ => is_subtype(&var_ty, expected),
        };
        if !allowed {
            self.errors.push(GqlError::at(
                format!(
                    "Variable \"${name}\" of type \"{var_ty}\" used in position expecting type \"{expected}\"."
                ),
                pos,
            ));
        }
    }

    /// Applies `@skip`/`@include`; refuses other directives. Returns whether to keep the
    /// selection.
    fn directives_ok(
        &mut self,
        directives: &[graphql_parser::query::Directive<'_, String>],
        location: &str,
    ) -> bool {
        let mut keep = true;
        for d in directives {
            match d.name.as_str() {
                "skip" | "include" if location == "FIELD" || location == "FRAGMENT" => {
                    let arg = d.arguments.iter().find(|(n, _)| n == "if");
                    for (n, _) in &d.arguments {
                        if n != "if" {
                            self.errors.push(GqlError::at(
                                format!("Unknown argument \"{n}\" on directive \"@{}\".", d.name),
                                d.position,
                            ));
                        }
                    }
                    let Some((_, value)) = arg else {
                        self.errors.push(GqlError::at(
                            format!(
                                "Directive \"@{}\" argument \"if\" of type \"Boolean!\" is required, but it was not provided.",
                                d.name
                            ),
                            d.position,
                        ));
                        continue;
                    };
                    let boolean = TypeRef::NonNull(Box::new(TypeRef::Named("Boolean".into())));
                    self.check_literal(value, &boolean, d.position, false);
                    let flag = matches!(self.literal_json(value), Some(Json::Bool(true)));
                    if (d.name == "skip") == flag {
                        keep = false;
                    }
                }
                name if self.schema.directives.contains(name) => self.errors.push(GqlError::at(
                    format!("Directive \"@{name}\" may not be used on {location}."),
                    d.position,
                )),
                name => self.errors.push(GqlError::at(
                    format!("Unknown directive \"@{name}\"."),
                    d.position,
                )),
            }
        }
        keep
    }

    fn selection_set(
        &mut self,
        parent: &str,
        set: &'d SelectionSet<'static, String>,
        out: &mut Vec<Selected>,
    ) {
        for item in &set.items {
            match item {
                Selection::Field(f) => {
                    if !self.directives_ok(&f.directives, "FIELD") {
                        continue;
                    }
                    self.field(parent, f, out);
                }
                Selection::InlineFragment(frag) => {
                    if !self.directives_ok(&frag.directives, "FRAGMENT") {
                        continue;
                    }
                    let inner = match &frag.type_condition {
                        Some(TypeCondition::On(t)) => {
                            if !self.spread_applies(parent, t, None, frag.position) {
                                continue;
                            }
                            t.as_str()
                        }
                        None => parent,
                    };
                    let inner = inner.to_owned();
                    self.selection_set(&inner, &frag.selection_set, out);
                }
                Selection::FragmentSpread(spread) => {
                    if !self.directives_ok(&spread.directives, "FRAGMENT") {
                        continue;
                    }
                    let name = spread.fragment_name.as_str();
                    self.used_fragments.insert(name.to_owned());
                    let Some(frag) = self.fragments.get(name).copied() else {
                        self.errors.push(GqlError::at(
                            format!("Unknown fragment \"{name}\"."),
                            spread.position,
                        ));
                        continue;
                    };
                    if self.spread_stack.iter().any(|n| n == name) {
                        self.errors.push(GqlError::at(
                            format!("Cannot spread fragment \"{name}\" within itself."),
                            spread.position,
                        ));
                        continue;
                    }
                    let TypeCondition::On(on) = &frag.type_condition;
                    if !self.spread_applies(parent, on, Some(name), spread.position) {
                        continue;
                    }
                    self.spread_stack.push(name.to_owned());
                    self.selection_set(on, &frag.selection_set, out);
                    self.spread_stack.pop();
                }
            }
        }
    }

    fn spread_applies(&mut self, parent: &str, on: &str, fragment: Option<&str>, pos: Pos) -> bool {
        match self.schema.kind(on) {
            None => {
                self.errors
                    .push(GqlError::at(format!("Unknown type \"{on}\"."), pos));
                return false;
            }
            Some(Kind::Object | Kind::Interface | Kind::Union) => {}
            Some(_) => {
                self.errors.push(GqlError::at(
                    format!("Fragment cannot condition on non composite type \"{on}\"."),
                    pos,
                ));
                return false;
            }
        }
        let overlap = self
            .schema
            .possible(parent)
            .intersection(&self.schema.possible(on))
            .next()
            .is_some();
        if !overlap {
            let message = match fragment {
                Some(f) => format!(
                    "Fragment \"{f}\" cannot be spread here as objects of type \"{parent}\" can never be of type \"{on}\"."
                ),
                None => format!(
                    "Fragment cannot be spread here as objects of type \"{parent}\" can never be of type \"{on}\"."
                ),
            };
            self.errors.push(GqlError::at(message, pos));
        }
        overlap
    }

    fn field(
        &mut self,
        parent: &str,
        f: &'d graphql_parser::query::Field<'static, String>,
        out: &mut Vec<Selected>,
    ) {
        let key = f.alias.clone().unwrap_or_else(|| f.name.clone());
        let schema = self.schema;
        let is_root_query = parent == schema.query;
        if f.name == "__typename" || (is_root_query && (f.name == "__schema" || f.name == "__type"))
        {
            // Introspection: validated only as far as the stand-in needs; `railway.rs`
            // answers `__typename` and refuses the rest as not implemented.
            self.mark_args_variables(f);
            out.push(Selected {
                key,
                name: f.name.clone(),
                parent: parent.to_owned(),
                args: Map::new(),
                children: Vec::new(),
                pos: f.position,
            });
            return;
        }
        let Some(def) = schema.types.get(parent).and_then(|t| t.fields.get(&f.name)) else {
            self.errors.push(GqlError::at(
                format!("Cannot query field \"{}\" on type \"{parent}\".", f.name),
                f.position,
            ));
            self.mark_args_variables(f);
            return;
        };
        for (arg_name, arg_value) in &f.arguments {
            match def.args.iter().find(|a| &a.name == arg_name) {
                None => {
                    self.errors.push(GqlError::at(
                        format!(
                            "Unknown argument \"{arg_name}\" on field \"{parent}.{}\".",
                            f.name
                        ),
                        f.position,
                    ));
                    self.mark_nested_variables(arg_value, f.position);
                }
                Some(arg) => self.check_literal(arg_value, &arg.ty, f.position, arg.has_default),
            }
        }
        for arg in &def.args {
            let required = matches!(arg.ty, TypeRef::NonNull(_)) && !arg.has_default;
            if required && !f.arguments.iter().any(|(n, _)| n == &arg.name) {
                self.errors.push(GqlError::at(
                    format!(
                        "Field \"{}\" argument \"{}\" of type \"{}\" is required, but it was not provided.",
                        f.name, arg.name, arg.ty
                    ),
                    f.position,
                ));
            }
        }
        let mut args = Map::new();
        for (arg_name, arg_value) in &f.arguments {
            if let Some(json) = self.literal_json(arg_value) {
                args.insert(arg_name.clone(), json);
            }
        }
        let named = def.ty.named().to_owned();
        let mut children = Vec::new();
        match schema.kind(&named) {
            Some(Kind::Object | Kind::Interface | Kind::Union) => {
                if f.selection_set.items.is_empty() {
                    self.errors.push(GqlError::at(
                        format!(
                            "Field \"{}\" of type \"{}\" must have a selection of subfields. Did you mean \"{} {{ ... }}\"?",
                            f.name, def.ty, f.name
                        ),
                        f.position,
                    ));
                } else {
                    self.selection_set(&named, &f.selection_set, &mut children);
                }
            }
            _ => {
                if !f.selection_set.items.is_empty() {
                    self.errors.push(GqlError::at(
                        format!(
                            "Field \"{}\" must not have a selection since type \"{}\" has no subfields.",
                            f.name, def.ty
                        ),
                        f.position,
                    ));
                }
            }
        }
        out.push(Selected {
            key,
            name: f.name.clone(),
            parent: parent.to_owned(),
            args,
            children,
            pos: f.position,
        });
    }

    fn mark_args_variables(&mut self, f: &graphql_parser::query::Field<'_, String>) {
        for (_, value) in &f.arguments {
            self.mark_nested_variables(value, f.position);
        }
    }

    /// A literal as JSON, variables substituted; `None` for an unset variable.
    fn literal_json(&self, value: &Value<'_, String>) -> Option<Json> {
        Some(match value {
            Value::Variable(name) => return self.vars.get(name.as_str()).cloned(),
            Value::Int(n) => n.as_i64().map(Json::from).unwrap_or(Json::Null),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map(Json::Number)
                .unwrap_or(Json::Null),
            Value::String(s) => Json::String(s.clone()),
            Value::Boolean(b) => Json::Bool(*b),
            Value::Null => Json::Null,
            Value::Enum(e) => Json::String(e.clone()),
            Value::List(items) => Json::Array(
                items
                    .iter()
                    .map(|item| self.literal_json(item).unwrap_or(Json::Null))
                    .collect(),
            ),
            Value::Object(map) => Json::Object(
                map.iter()
                    .filter_map(|(k, v)| self.literal_json(v).map(|json| (k.clone(), json)))
                    .collect(),
            ),
        })
    }
}

fn is_subtype(var: &TypeRef, location: &TypeRef) -> bool {
    match (var, location) {
        _ if var == location => true,
        (TypeRef::NonNull(v), TypeRef::NonNull(l)) => is_subtype(v, l),
        (_, TypeRef::NonNull(_)) => false,
        (TypeRef::NonNull(v), l) => is_subtype(v, l),
        (TypeRef::List(v), TypeRef::List(l)) => is_subtype(v, l),
        _ => false,
    }
}

fn is_builtin_scalar(name: &str) -> bool {
    matches!(name, "String" | "Int" | "Float" | "Boolean" | "ID")
}

/// graphql-js's literal checks for the built-in scalars (custom scalars take anything).
fn scalar_literal_error(name: &str, value: &Value<'_, String>) -> Option<String> {
    let message = match (name, value) {
        ("String", Value::String(_))
        | ("Boolean", Value::Boolean(_))
        | ("Float", Value::Int(_) | Value::Float(_))
        | ("ID", Value::String(_) | Value::Int(_)) => return None,
        ("Int", Value::Int(n)) if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => {
            return None
        }
        ("Int", Value::Int(_)) => "Int cannot represent non 32-bit signed integer value",
        ("String", _) => "String cannot represent a non string value",
        ("Boolean", _) => "Boolean cannot represent a non boolean value",
        ("Int", _) => "Int cannot represent non-integer value",
        ("Float", _) => "Float cannot represent non numeric value",
        ("ID", _) => "ID cannot represent a non-string and non-integer value",
        _ => return None,
    };
    Some(format!("{message}: {value}"))
}

/// Input coercion of a JSON value for a scalar type.
fn coerce_scalar_json(name: &str, value: &Json) -> Result<Json, String> {
    match (name, value) {
        ("String", Json::String(_)) | ("Boolean", Json::Bool(_)) => Ok(value.clone()),
        ("String", other) => Err(format!(
            "String cannot represent a non string value: {other}"
        )),
        ("Boolean", other) => Err(format!(
            "Boolean cannot represent a non boolean value: {other}"
        )),
        ("Int", Json::Number(n)) if n.as_i64().is_some_and(|n| i32::try_from(n).is_ok()) => {
            Ok(value.clone())
        }
        ("Int", Json::Number(n)) if n.is_i64() || n.is_u64() => Err(format!(
            "Int cannot represent non 32-bit signed integer value: {n}"
        )),
        ("Int", other) => Err(format!("Int cannot represent non-integer value: {other}")),
        ("Float", Json::Number(_)) => Ok(value.clone()),
        ("Float", other) => Err(format!("Float cannot represent non numeric value: {other}")),
        ("ID", Json::String(_)) => Ok(value.clone()),
        ("ID", Json::Number(n)) if n.is_i64() || n.is_u64() => Ok(Json::String(n.to_string())),
        ("ID", other) => Err(format!("ID cannot represent value: {other}")),
        ("EnvironmentVariables", Json::Object(map)) if map.values().all(Json::is_string) => {
            Ok(value.clone())
        }
        ("EnvironmentVariables", other) => Err(format!(
            "Expected value of type \"EnvironmentVariables\", found {other}; stand-in: \
             EnvironmentVariables must be an object of string values."
        )),
        _ => Ok(value.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(query: &str, vars: Json) -> Result<Prepared, Vec<String>> {
        let schema = schema().unwrap();
        let doc = graphql_parser::parse_query::<String>(query)
            .unwrap()
            .into_static();
        let vars = vars.as_object().cloned().unwrap_or_default();
        prepare(schema, &doc, None, &vars).map_err(|e| e.into_iter().map(|e| e.message).collect())
    }

    #[test]
    fn schema_loads_with_the_fields_the_client_uses() {
        let schema = schema().unwrap();
        for (ty, field) in [
            ("Mutation", "variableCollectionUpsert"),
            ("Mutation", "variableUpsert"),
            ("Mutation", "variableDelete"),
            ("Mutation", "serviceInstanceDeployV2"),
            ("Query", "variables"),
            ("Query", "deployment"),
            ("Query", "serviceInstance"),
            ("Deployment", "status"),
            ("ServiceInstance", "latestDeployment"),
        ] {
            assert!(schema.has_field(ty, field), "{ty}.{field}");
        }
    }

    #[test]
    fn refuses_unknown_fields_arguments_and_input_keys() {
        let errors = run("mutation { nope }", json!({})).unwrap_err();
        assert_eq!(
            errors,
            ["Cannot query field \"nope\" on type \"Mutation\"."]
        );

        let errors = run(
            "query { deployment(id: \"x\", extra: 1) { id } }",
            json!({}),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            ["Unknown argument \"extra\" on field \"Query.deployment\"."]
        );

        let errors = run(
            "mutation($i: VariableCollectionUpsertInput!) { variableCollectionUpsert(input: $i) }",
            json!({"i": {"projectId": "p", "environmentId": "e", "variables": {}, "bogus": 1}}),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains(
                "Field \"bogus\" is not defined by type \"VariableCollectionUpsertInput\"."
            ),
            "{errors:?}"
        );

        let errors = run(
            "mutation { variableUpsert(input: {projectId: \"p\", environmentId: \"e\", name: \"A\", value: \"v\", colour: 1}) }",
            json!({}),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            ["Field \"colour\" is not defined by type \"VariableUpsertInput\"."]
        );
    }

    #[test]
    fn refuses_missing_required_values_and_wrong_types() {
        let errors = run("query { deployment { id } }", json!({})).unwrap_err();
        assert_eq!(
            errors,
            ["Field \"deployment\" argument \"id\" of type \"String!\" is required, but it was not provided."]
        );
        let errors = run("query { deployment(id: 5) { id } }", json!({})).unwrap_err();
        assert_eq!(errors, ["String cannot represent a non string value: 5"]);
        let errors = run("query { deployment(id: \"x\") }", json!({})).unwrap_err();
        assert!(errors[0].contains("must have a selection of subfields"));
        let errors = run(
            "query($id: String!) { deployment(id: $id) { id } }",
            json!({}),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            ["Variable \"$id\" of required type \"String!\" was not provided."]
        );
        let errors = run(
            "query($id: String) { deployment(id: $id) { id } }",
            json!({"id": "x"}),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            ["Variable \"$id\" of type \"String\" used in position expecting type \"String!\"."]
        );
        let errors = run(
            "mutation { variableUpsert(input: {projectId: \"p\", environmentId: \"e\", value: \"v\"}) }",
            json!({}),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            ["Field \"VariableUpsertInput.name\" of required type \"String!\" was not provided."]
        );
    }

    #[test]
    fn flattens_fragments_aliases_and_variables() {
        let prepared = run(
            "query Q($id: String!, $skip: Boolean = true) {
               d: deployment(id: $id) { ...F status @skip(if: $skip) }
             }
             fragment F on Deployment { id ... on Deployment { s: status } }",
            json!({"id": "dep"}),
        )
        .unwrap();
        assert_eq!(prepared.kind, OpKind::Query);
        let field = &prepared.fields[0];
        assert_eq!(
            (field.key.as_str(), field.name.as_str()),
            ("d", "deployment")
        );
        assert_eq!(field.args.get("id"), Some(&json!("dep")));
        let keys: Vec<_> = field.children.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["id", "s"]);
    }
}
