// netstate.tcp: the Zabbix webhook media type "netstate.tcp to ansible-rulebook" (roles/zabbix_register).
// Posts a problem or a recovery of the netstate template's triggers to ansible-rulebook's eda.builtin.webhook,
// where the rulebook netstate.tcp.alerts runs the guarded remediation (docs/remediation.md). The body:
//   {"source": "zabbix", "status": "problem"|"recovery", "event_id": "123", "host": "<host name>",
//    "rule": "<the trigger's tag rule>", "port": "<its tag port, or empty>", "severity": "0".."5"}
// Zabbix runs it in its JavaScript engine (ECMAScript 5: var, no arrow functions), with `value` holding the
// media type's parameters as JSON, within the media type's timeout. The token is never logged nor returned.
function tagValue(tags, name) {
    for (var i = 0; i < tags.length; i++) {
        if (tags[i] && tags[i].tag === name) {
            return String(tags[i].value);
        }
    }
    return '';
}

function eventBody(params) {
    if (params.event_source !== '0') {
        throw 'only trigger events are sent (event source ' + params.event_source + ')';
    }
    if (!/^[0-9]{1,20}$/.test(params.event_id)) {
        throw 'event_id ' + JSON.stringify(params.event_id) + ' is not an event id';
    }
    var tags;
    try {
        tags = JSON.parse(params.event_tags || '[]');
    }
    catch (error) {
        throw 'event_tags is not JSON: ' + error;
    }
    if (!Array.isArray(tags)) {
        throw 'event_tags is not a list';
    }
    return {
        source: 'zabbix',
        status: params.event_value === '0' ? 'recovery' : 'problem',
        event_id: params.event_id,
        host: params.host,
        rule: tagValue(tags, 'rule'),
        port: tagValue(tags, 'port'),
        severity: params.event_nseverity
    };
}

function post(params, body) {
    if (!/^https?:\/\/[^\s\/?#]+(\/[^\s?#]*)?$/.test(params.url)) {
        throw 'url ' + JSON.stringify(params.url) + ' is not an http:// or https:// URL';
    }
    if (typeof params.token !== 'string' || params.token === '') {
        throw 'token is empty';
    }
    var request = new HttpRequest();
    if (typeof params.http_proxy === 'string' && params.http_proxy !== '') {
        request.setProxy(params.http_proxy);
    }
    request.addHeader('Content-Type: application/json');
    request.addHeader('Authorization: Bearer ' + params.token);
    var answer = request.post(params.url, JSON.stringify(body));
    var status = request.getStatus();
    if (status < 200 || status > 299) {
        throw 'ansible-rulebook answered HTTP ' + status + ': ' + String(answer).substring(0, 200);
    }
    return status;
}

var params = JSON.parse(value);
// an acknowledgement or a comment (an update) is no new state for the rulebook
if (params.event_update_status === '1') {
    return 'update not sent';
}
var body = eventBody(params);
Zabbix.log(4, '[netstate.tcp to ansible-rulebook] ' + body.status + ' of event ' + body.event_id + ' to ' + params.url);
post(params, body);
return 'OK';
