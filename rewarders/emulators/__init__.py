"""Local HTTP emulators of the PubMed E-utilities and ClinicalTrials.gov v2 search APIs.

They answer from a Lucene index over a BEIR corpus (document ids stand for PMIDs / NCT ids), for
offline development, tests and benchmarks (`deepretrieval emulate pubmed|ctgov`).

Modules: `pubmed_query` / `ctgov_query` parse the two query languages into `query_ast` trees;
`lucene_search` runs a tree on the index; `pubmed` / `ctgov` are the HTTP endpoints;
`middleware` adds latency, the per-key rate limit (`server_rate_limit`) and injected faults
(`faults`); `runner` starts servers (in a loop, a thread, or as the CLI's main) and `process`
runs the CLI as a child process.
"""
