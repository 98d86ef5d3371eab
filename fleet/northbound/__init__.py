"""Northbound forwarding (issue 21): the fleet's history, sent to regional regulatory
platforms in their own terms (`mapping`), durably (`forwarder`, `fleet.store.northbound`),
over HTTP or MQTT (`transport`), configured in ``[northbound]`` (`config`)."""
