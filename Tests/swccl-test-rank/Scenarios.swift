// The registry of scenarios: the name a test passes (`Ranks.run("allreduce", …)`) and what runs.
// A scenario checks its rank's part, prints "PASS <scenario>" or "FAIL …" lines and exits 0 only if
// everything held. To add one: a function in the file of its kind, and its line here.

import SwiftCCLTesting

@MainActor let scenarios: [String: @MainActor () -> Void] = {
    var table: [String: @MainActor () -> Void] = [
        // Collectives.swift
        "allreduce": allreduceScenario,
        "collectives": collectivesScenario,
        "streams": streamsScenario,
        "split": splitScenario,
        // Agreement.swift
        "mismatch": mismatchScenario,
        "disagree": disagreeScenario,
        // Setup.swift
        "fromenv": fromEnvironmentScenario,
        "badiface": badInterfaceScenario,
        // Bootstrap.swift
        "besieged": besiegedScenario,
        "late": lateScenario,
        "diesinrendezvous": diesInRendezvousScenario,
        // Blame.swift
        "blame": blameScenario,
        "crosscomm": crossCommunicatorScenario,
        "shrinklabel": shrinkLabelScenario,
        // Transports.swift
        "pull": pullScenario,
    ]
    // Every case of the conformance suite, by its own name.
    for c in TransportConformance.cases { table[c.name] = { conformanceScenario(c.name) } }
    return table
}()
