//! The MCP channel's connector (`docs/mcp.md`): upstream MCP servers reached over streamable
//! HTTP in whichever revision each speaks ([`client`]). The `/mcp` front end that aggregates
//! them for the agent is the next piece; until it lands nothing routes calls here.

pub mod client;

#[cfg(test)]
mod tests;
