#include "json-schema-to-grammar.h"
#include "json.h"
#include <iostream>
#include <sstream>
#include <string>
// One JSON schema per input line; one output line per schema: OK <grammar length> or ERR <message>.
int main() {
    std::string line;
    while (std::getline(std::cin, line)) {
        try {
            auto schema = common_json::parse(line);
            std::string g = json_schema_to_grammar(schema, true);
            std::string flat;
            for (char c : g) flat += (c == '\n' ? '\x01' : c);
            std::cout << "OK " << flat << std::endl;
        } catch (const std::exception & e) {
            std::string m = e.what();
            for (auto & c : m) if (c == '\n') c = ' ';
            std::cout << "ERR " << m << std::endl;
        }
    }
}
